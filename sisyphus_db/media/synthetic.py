"""Generated media for tests, benchmarks and the offline demo: no downloads, fully seeded.

Videos are built from segments that look nothing alike, so the cut times are known
exactly; images are smooth random blobs (closer to photos than white noise, so CNN
embeddings and JPEG behave realistically); and every kind of broken input the loaders
must refuse can be produced on demand.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

SegmentKind = Literal["solid", "gradient", "checker", "noise", "blobs"]


@dataclass(frozen=True)
class Segment:
    """A stretch of video with one look.

    `color` tints solid/gradient/checker segments; `seed` picks the noise or blob pattern;
    `motion` scrolls the content horizontally by that many pixels per frame (a slow pan).
    """

    kind: SegmentKind
    seconds: float
    color: tuple[int, int, int] = (200, 60, 40)
    seed: int = 0
    motion: float = 0.0


def default_segments(count: int = 4, seconds: float = 3.0) -> list[Segment]:
    """`count` clearly different segments of `seconds` each (cuts at seconds, 2*seconds, ...)."""
    looks = [
        Segment("solid", seconds, color=(200, 40, 40)),
        Segment("gradient", seconds, color=(40, 200, 80), motion=0.5),
        Segment("checker", seconds, color=(40, 60, 220)),
        Segment("noise", seconds, seed=7),
        Segment("blobs", seconds, seed=11, motion=0.5),
        Segment("solid", seconds, color=(240, 230, 60)),
    ]
    return [looks[i % len(looks)] for i in range(count)]


def segment_frame(segment: Segment, frame_in_segment: int, size: tuple[int, int]) -> np.ndarray:
    """One H x W x 3 uint8 frame of a segment; `size` is (width, height)."""
    width, height = size
    color = np.array(segment.color, dtype=np.float64)
    if segment.kind == "solid":
        image = np.broadcast_to(color, (height, width, 3)).astype(np.float64)
    elif segment.kind == "gradient":
        ramp = np.linspace(0.15, 1.0, width)[None, :, None] * np.linspace(1.0, 0.6, height)[:, None, None]
        image = ramp * color
    elif segment.kind == "checker":
        cell = max(4, min(width, height) // 6)
        ys, xs = np.mgrid[0:height, 0:width]
        board = ((ys // cell + xs // cell) % 2).astype(np.float64)[:, :, None]
        image = board * color + (1.0 - board) * (255.0 - color)
    elif segment.kind == "noise":
        rng = np.random.default_rng(segment.seed)
        image = rng.integers(0, 256, size=(height, width, 3)).astype(np.float64)
    elif segment.kind == "blobs":
        image = _blobs(np.random.default_rng(segment.seed), width, height)
    else:  # pragma: no cover - Literal keeps callers honest, this guards dynamic use
        raise ValueError(f"unknown segment kind {segment.kind!r}")
    shift = int(round(segment.motion * frame_in_segment))
    if shift:
        image = np.roll(image, shift, axis=1)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_test_video(
    path: Path | str,
    segments: Sequence[Segment],
    *,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    codec: str = "libx264",
    gop: int | None = None,
    rotation: int = 0,
) -> list[float]:
    """Encode the segments back to back; return the cut times in seconds (segment starts after the first).

    The codec falls back to mpeg4 when the requested one is missing from PyAV's FFmpeg.
    With `gop`, key frames come exactly every `gop` frames (scene-cut key frames are
    turned off), so iframe selection can be checked against known ordinals.
    `rotation` (degrees counterclockwise) sets the display matrix, as phones do.
    """
    path = Path(path)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"expected even width and height for yuv420p, got {width}x{height}")
    if not segments:
        raise ValueError("expected at least one segment")
    if codec not in av.codecs_available:
        logger.info("codec %s not available in PyAV, using mpeg4", codec)
        codec = "mpeg4"
    rate = Fraction(fps).limit_denominator(1001)
    options: dict[str, str] = {}
    if codec == "libx264":
        options["preset"] = "ultrafast"  # also means no B-frames: pts order == decode order
        if gop is not None:
            options["sc_threshold"] = "0"
    path.parent.mkdir(parents=True, exist_ok=True)
    cuts: list[float] = []
    frame_number = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"codec {codec!r} is not a video codec")
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        for position, segment in enumerate(segments):
            count = max(1, int(round(segment.seconds * float(rate))))
            if position > 0:
                cuts.append(float(frame_number / rate))
            for i in range(count):
                frame = av.VideoFrame.from_ndarray(segment_frame(segment, i, size), format="rgb24")
                frame.pts = frame_number
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    container.mux(packet)
                frame_number += 1
        for packet in stream.encode(None):
            container.mux(packet)
    return cuts


def write_test_image(
    path: Path | str,
    seed: int,
    size: tuple[int, int] = (96, 72),
    fmt: str | None = None,
    *,
    captured_at: datetime | None = None,
    orientation: int | None = None,
    mode: str = "RGB",
) -> Path:
    """A smooth random-blob picture, distinct per seed; optional EXIF capture time/orientation.

    `fmt` is a Pillow format name (JPEG, PNG, ...); by default it follows the extension.
    `mode` converts before saving (e.g. 'L', 'RGBA', 'CMYK', 'I;16') to exercise loaders.
    """
    path = Path(path)
    width, height = size
    rgb = np.clip(np.rint(_blobs(np.random.default_rng(seed), width, height)), 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    if mode == "I;16":
        # Spread 8-bit luminance over the 16-bit range, as a real 16-bit scan would.
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(gray)  # uint16 arrays become mode I;16
    elif mode != "RGB":
        image = image.convert(mode)
    exif = Image.Exif()
    if captured_at is not None:
        stamp = captured_at.strftime("%Y:%m:%d %H:%M:%S")
        exif[306] = stamp  # DateTime in IFD0
        exif.get_ifd(0x8769)[36867] = stamp  # DateTimeOriginal in the Exif IFD
    if orientation is not None:
        exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    save_kwargs: dict[str, object] = {}
    if len(exif):
        save_kwargs["exif"] = exif.tobytes()
    image.save(path, format=fmt, **save_kwargs)
    return path


def _blobs(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A float H x W x 3 image: soft background gradient plus a few coloured Gaussian blobs."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    ys /= max(height - 1, 1)
    xs /= max(width - 1, 1)
    corners = rng.uniform(0, 255, size=(2, 2, 3))
    top = corners[0, 0] * (1 - xs[..., None]) + corners[0, 1] * xs[..., None]
    bottom = corners[1, 0] * (1 - xs[..., None]) + corners[1, 1] * xs[..., None]
    image = top * (1 - ys[..., None]) + bottom * ys[..., None]
    for _ in range(int(rng.integers(3, 7))):
        cy, cx = rng.uniform(0, 1, size=2)
        radius = rng.uniform(0.08, 0.3)
        weight = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))[..., None]
        image = image * (1 - weight) + rng.uniform(0, 255, size=3) * weight
    return np.asarray(image, dtype=np.float64)


# --- broken inputs -------------------------------------------------------------------


def write_empty_file(path: Path | str) -> Path:
    """A zero-byte file (an interrupted copy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_truncated_jpeg(path: Path | str, seed: int = 0, keep_fraction: float = 0.5) -> Path:
    """A valid JPEG cut off partway through its scan data (an interrupted download)."""
    path = Path(path)
    write_test_image(path, seed, size=(256, 192), fmt="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return path


def write_text_as_image(path: Path | str) -> Path:
    """A text file wearing an image extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not an image, just some text\n")
    return path


def write_decompression_bomb_png(path: Path | str, side: int = 20_000) -> Path:
    """A real 1-bit PNG of side x side pixels (400 M at the default) that is only ~50 KB.

    Built chunk by chunk with zlib, streaming rows of zeros, so making it costs neither
    memory nor a full-size image in Pillow.
    """
    path = Path(path)
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte 0, then all-black packed bits
    compressor = zlib.compressobj(9)
    parts = []
    rows_per_block = 256
    for start in range(0, side, rows_per_block):
        parts.append(compressor.compress(row * min(rows_per_block, side - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
    png += _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def write_garbage_video(path: Path | str, size: int = 64 * 1024, seed: int = 0) -> Path:
    """Random bytes with a video extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8).tobytes())
    return path


def write_audio_only(path: Path | str, seconds: float = 1.0, rate: int = 8000) -> Path:
    """A media file with an audio stream and no video stream (e.g. a .mkv voice memo)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = int(seconds * rate)
    tone = (np.sin(np.arange(samples) * 2 * np.pi * 440 / rate) * 8000).astype(np.int16)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        assert isinstance(stream, av.AudioStream)  # narrows the type; pcm is always audio
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
