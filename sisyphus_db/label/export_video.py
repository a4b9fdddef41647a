"""`sisyphus export video (NAME | --search RUN_ID) --out FILE.mp4`: frames as a clip, and a contact sheet.

The original sisyphus turned key frames back into a video to review them at a glance. Each
frame is shown for 1/fps seconds, letterboxed onto one canvas, with its source and time
burnt in (Pillow text); the clip is H.264 through PyAV (MPEG-4 where FFmpeg lacks libx264),
written under a temporary name and renamed when complete. The contact sheet is a grid of
captioned thumbnails in one JPEG.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from PIL import Image, ImageDraw, ImageFont

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.label.export_select import ExportError
from sisyphus_db.label.labels import LabelError, require_label
from sisyphus_db.media.images import load_image

logger = logging.getLogger(__name__)

MAX_CANVAS = (1280, 720)
TILE = (240, 135)
CAPTION_HEIGHT = 18
MAX_SHEET_FRAMES = 400  # 8 x 50 tiles: a sheet of more would be a poster, not an overview
_CODECS = ("libx264", "mpeg4")


@dataclass(frozen=True)
class ClipFrame:
    frame_id: int
    path: str
    source_uri: str
    pts_seconds: float
    note: str  # "rank 3" for a search run, "manual"/"propagated" for a label

    def caption(self) -> str:
        return f"{self.source_uri}  {self.pts_seconds:.2f} s  frame {self.frame_id}  {self.note}"

    def short_caption(self) -> str:
        return f"{Path(self.source_uri).name[:22]}  {self.pts_seconds:.1f} s"


@dataclass(frozen=True)
class VideoReport:
    out: str
    frames: int
    fps: float
    width: int
    height: int
    codec: str
    seconds: float
    contact_sheet: str | None = None
    contact_sheet_size: list[int] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def clip_frames(db: Database, *, label: str | None = None, run_id: int | None = None) -> list[ClipFrame]:
    """A label's positive frames by source and time, or a stored search run's results by rank."""
    if (label is None) == (run_id is None):
        raise InputError("give a label NAME or --search RUN_ID (one of them)")
    with db.transaction() as conn:
        if label is not None:
            name = require_label(db, label)
            rows = conn.execute(sa.text(
                "SELECT f.id, f.path, s.uri, f.pts_seconds, l.origin FROM labels l JOIN frames f ON f.id = l.frame_id "
                "JOIN sources s ON s.id = f.source_id WHERE l.label = :n AND l.positive "
                "ORDER BY s.uri, f.pts_seconds, f.id"), {"n": name}).all()
            if not rows:
                raise LabelError(f"label {name!r} has no positive frames to put in a video")
        else:
            if conn.execute(sa.text("SELECT 1 FROM search_runs WHERE id = :r"), {"r": run_id}).first() is None:
                raise LabelError(f"search run {run_id} does not exist")
            rows = conn.execute(sa.text(
                "SELECT f.id, f.path, s.uri, f.pts_seconds, 'rank ' || r.rank FROM search_results r "
                "JOIN frames f ON f.id = r.frame_id JOIN sources s ON s.id = f.source_id WHERE r.run_id = :r "
                "ORDER BY r.rank"), {"r": run_id}).all()
            if not rows:
                raise LabelError(f"search run {run_id} has no results to put in a video")
    return [ClipFrame(int(r[0]), r[1], r[2], float(r[3]), r[4]) for r in rows]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The image scaled to fit `size` and centred on black (letterbox)."""
    canvas = Image.new("RGB", size)
    scale = min(size[0] / image.width, size[1] / image.height)
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                           Image.Resampling.BILINEAR)
    canvas.paste(resized, ((size[0] - resized.width) // 2, (size[1] - resized.height) // 2))
    return canvas


def _load(frame: ClipFrame) -> Image.Image:
    return Image.fromarray(load_image(frame.path).rgb)


def _canvas_size(frames: list[ClipFrame]) -> tuple[int, int]:
    """The first frame's size, scaled down to fit 1280x720, with even sides (yuv420p needs them)."""
    with Image.open(frames[0].path) as first:
        width, height = first.size
    scale = min(1.0, MAX_CANVAS[0] / width, MAX_CANVAS[1] / height)
    return max(64, round(width * scale) // 2 * 2), max(64, round(height * scale) // 2 * 2)


def _burn_caption(image: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(image, "RGBA")
    size = max(12, image.height // 28)
    band = size + 10
    draw.rectangle((0, image.height - band, image.width, image.height), fill=(0, 0, 0, 170))
    draw.text((6, image.height - band + 4), text, fill=(255, 255, 255, 255), font=_font(size))
    return image


def _open_stream(container: Any, fps: float, size: tuple[int, int]) -> tuple[Any, str]:
    import av

    rate = Fraction(fps).limit_denominator(1001)
    for codec in _CODECS:
        try:
            av.codec.Codec(codec, "w")
        except ValueError:
            continue
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast"}
        return stream, codec
    raise ExportError("this FFmpeg build has no libx264 or mpeg4 encoder")


def _check_output(out: Path, force: bool, what: str) -> None:
    if out.exists() and not force:
        raise ExportError(f"{what} {out} exists: choose another path or add --force")
    if out.exists() and out.is_dir():
        raise ExportError(f"{what} {out} is a folder")


def _frames_as_images(frames: list[ClipFrame], size: tuple[int, int]) -> Iterator[Image.Image]:
    for frame in frames:
        yield _burn_caption(_fit(_load(frame), size), frame.caption())


def write_clip(frames: list[ClipFrame], out: Path, *, fps: float = 2.0, force: bool = False,
               contact_sheet: Path | None = None, columns: int | None = None) -> VideoReport:
    """Encode the frames as an MP4 (and optionally a contact sheet); checks everything before writing."""
    import av

    if not (math.isfinite(fps) and 0 < fps <= 120):
        raise InputError(f"--fps must be in (0, 120], got {fps}")
    if out.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise InputError(f"--out must end in .mp4 (or .m4v, .mov), got {out.name}")
    _check_output(out, force, "video file")
    if contact_sheet is not None:
        if contact_sheet.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            raise InputError(f"--contact-sheet must end in .jpg or .png, got {contact_sheet.name}")
        _check_output(contact_sheet, force, "contact sheet")
    missing = [f.path for f in frames if not os.path.isfile(f.path)]
    if missing:
        raise ExportError(f"{len(missing)} frame file{'s are' if len(missing) > 1 else ' is'} missing "
                          f"(e.g. {missing[0]}): nothing was written")
    started = time.perf_counter()
    size = _canvas_size(frames)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    try:
        with av.open(str(partial), mode="w", format="mp4") as container:
            stream, codec = _open_stream(container, fps, size)
            for index, image in enumerate(_frames_as_images(frames, size)):
                frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush the encoder's delayed frames
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    sheet_size = None
    warnings: list[str] = []
    if contact_sheet is not None:
        shown = frames
        if len(frames) > MAX_SHEET_FRAMES:
            # Evenly spaced frames keep the overview of the whole sequence.
            shown = [frames[i] for i in np.linspace(0, len(frames) - 1, MAX_SHEET_FRAMES).round().astype(int)]
            warnings.append(f"the contact sheet shows {MAX_SHEET_FRAMES} evenly spaced frames of {len(frames)}")
        sheet = make_contact_sheet(shown, columns=columns)
        contact_sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(contact_sheet, quality=88)
        sheet_size = [sheet.width, sheet.height]
    return VideoReport(out=str(out), frames=len(frames), fps=fps, width=size[0], height=size[1], codec=codec,
                       seconds=round(time.perf_counter() - started, 3),
                       contact_sheet=None if contact_sheet is None else str(contact_sheet),
                       contact_sheet_size=sheet_size, warnings=warnings)


def sheet_columns(n: int, columns: int | None = None) -> int:
    """Columns of the grid: as asked, else about square, at most 8."""
    if columns is not None:
        if columns < 1:
            raise InputError(f"--columns must be at least 1, got {columns}")
        return min(columns, n)
    return max(1, min(8, math.ceil(math.sqrt(n))))


def make_contact_sheet(frames: list[ClipFrame], *, columns: int | None = None) -> Image.Image:
    """A grid of TILE-sized letterboxed thumbnails, each with a caption line under it."""
    cols = sheet_columns(len(frames), columns)
    rows = math.ceil(len(frames) / cols)
    cell = (TILE[0], TILE[1] + CAPTION_HEIGHT)
    sheet = Image.new("RGB", (cols * cell[0], rows * cell[1]), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = _font(11)
    for i, frame in enumerate(frames):
        x, y = (i % cols) * cell[0], (i // cols) * cell[1]
        sheet.paste(_fit(_load(frame), TILE), (x, y))
        draw.text((x + 3, y + TILE[1] + 3), frame.short_caption(), fill=(230, 230, 230), font=font)
    return sheet
