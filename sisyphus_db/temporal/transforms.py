"""Transformed copies of a video with known ground truth, written with PyAV (video copy detection).

Each transformation returns the file it wrote and where the copy came from: the range of
the query that is a copy and the range of the source it shows. Used by `sisyphus eval
videocopy`, the tests and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from sisyphus_db.errors import InputError
from sisyphus_db.media.synthetic import Segment, segment_frame
from sisyphus_db.media.video import iter_video_frames

TRANSFORMATIONS = ("reencode", "resize", "crop", "colour", "speed", "excerpt", "insert")
Frames = list[npt.NDArray[np.uint8]]


@dataclass(frozen=True)
class CopyTruth:
    transformation: str
    path: Path
    source_uri: str
    query_range: tuple[float, float]
    match_range: tuple[float, float]


def read_frames(path: Path) -> tuple[Frames, float]:
    """Every frame of a (short) video as RGB, and its frame rate."""
    frames = [frame.rgb for frame in iter_video_frames(path)]
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return frames, float(rate) if rate else 10.0


def write_frames(path: Path, frames: Sequence[npt.NDArray[np.uint8]], fps: float, *, bitrate: int | None = None) -> Path:
    """Encode RGB frames as H.264 (mpeg4 when libx264 is missing); sizes are cropped to even."""
    if not frames:
        raise InputError(f"{path}: no frames to write")
    height, width = (frames[0].shape[0] // 2) * 2, (frames[0].shape[1] // 2) * 2
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        options = {"preset": "ultrafast"} if codec == "libx264" else {}
        if bitrate is not None and codec == "libx264":
            options = {"preset": "ultrafast", "crf": "40"}  # a starved encode: blocky, smeared detail
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if bitrate is not None:
            stream.bit_rate = bitrate
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, 1) / Fraction(fps).limit_denominator(1001)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _resize(rgb: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


def filler_frames(seconds: float, fps: float, size: tuple[int, int], seed: int) -> Frames:
    """Generated footage that is in no corpus: slowly panning blobs, a new look every 2 s."""
    frames: Frames = []
    count = round(seconds * fps)
    per_look = max(1, round(2 * fps))
    base: npt.NDArray[np.uint8] | None = None
    for index in range(count):
        if index % per_look == 0 or base is None:
            # One picture per look, panned: the same frames segment_frame makes, without
            # recomputing the blobs for every frame.
            base = segment_frame(Segment("blobs", 2.0, seed=10_000 + seed * 97 + index // per_look), 0, size)
        shift = int(round(1.5 * (index % per_look)))
        frames.append(np.roll(base, shift, axis=1) if shift else base)
    return frames


def make_copy(source: Path, transformation: str, out: Path, *, rng: np.random.Generator,
              min_excerpt: float = 3.0, max_excerpt: float = 6.0) -> CopyTruth:
    """Write one transformed copy of `source` to `out` and return its ground truth."""
    frames, fps = read_frames(source)
    duration = len(frames) / fps
    whole = (0.0, duration)
    height, width = frames[0].shape[:2]
    if transformation == "reencode":
        write_frames(out, frames, fps, bitrate=40_000)
        return CopyTruth(transformation, out, str(source), whole, whole)
    if transformation == "resize":
        small = [_resize(f, max(32, width // 2 // 2 * 2), max(32, height // 2 // 2 * 2)) for f in frames]
        write_frames(out, small, fps)
        return CopyTruth(transformation, out, str(source), whole, whole)
    if transformation == "crop":
        y0, x0 = height // 8, width // 8
        write_frames(out, [f[y0:height - y0, x0:width - x0] for f in frames], fps)
        return CopyTruth(transformation, out, str(source), whole, whole)
    if transformation == "colour":
        gain = np.array([1.15, 0.9, 0.8])
        shifted = [np.clip(f.astype(np.float32) * gain + np.array([20.0, 0.0, -10.0]), 0, 255).astype(np.uint8)
                   for f in frames]
        write_frames(out, shifted, fps)
        return CopyTruth(transformation, out, str(source), whole, whole)
    if transformation == "speed":
        count = int(len(frames) / 1.25)
        picked = [frames[min(len(frames) - 1, round(i * 1.25))] for i in range(count)]
        write_frames(out, picked, fps)
        return CopyTruth(transformation, out, str(source), (0.0, count / fps), (0.0, min(duration, count * 1.25 / fps)))
    if transformation in ("excerpt", "insert"):
        length = float(rng.uniform(min_excerpt, min(max_excerpt, duration)))
        start = float(rng.uniform(0.0, max(0.0, duration - length)))
        first, count = round(start * fps), round(length * fps)
        piece = frames[first:first + count]
        match = (first / fps, (first + len(piece)) / fps)
        if transformation == "excerpt":
            write_frames(out, piece, fps)
            return CopyTruth(transformation, out, str(source), (0.0, len(piece) / fps), match)
        before = float(rng.uniform(2.0, 5.0))
        head = filler_frames(before, fps, (width, height), seed=int(rng.integers(1 << 30)))
        tail = filler_frames(float(rng.uniform(2.0, 5.0)), fps, (width, height), seed=int(rng.integers(1 << 30)))
        write_frames(out, head + piece + tail, fps)
        return CopyTruth(transformation, out, str(source), (len(head) / fps, (len(head) + len(piece)) / fps), match)
    raise InputError(f"unknown transformation {transformation!r}: expected one of {', '.join(TRANSFORMATIONS)}")


def make_copies(sources: Sequence[Path], out_dir: Path, transformations: Sequence[str] = TRANSFORMATIONS, *,
                seed: int = 0, min_excerpt: float = 3.0, max_excerpt: float = 6.0,
                progress: Callable[[int], None] | None = None) -> list[CopyTruth]:
    rng = np.random.default_rng(seed)
    truths: list[CopyTruth] = []
    for number, source in enumerate(sources):
        for name in transformations:
            truths.append(make_copy(source, name, out_dir / f"{number:04d}-{name}.mp4", rng=rng,
                                    min_excerpt=min_excerpt, max_excerpt=max_excerpt))
            if progress is not None:
                progress(1)
    return truths


def write_generated_video(path: Path, seconds: float, *, seed: int, fps: float = 10.0,
                          size: tuple[int, int] = (160, 120)) -> Path:
    """A corpus video of generated footage (a new look every 2 s), distinct per seed."""
    return write_frames(Path(path), filler_frames(seconds, fps, size, seed=seed + 1), fps)
