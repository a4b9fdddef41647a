"""Write a synthetic drive video with known road-works intervals, for the demo.

The demo needs a corpus where the rare scene and its ground truth are known exactly:
`make_drive_video` renders a drive (see `drive_scene`) with a few short construction
blockages and returns their intervals, so retrieval can be scored per frame.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from random import Random
from typing import cast

import av

from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.drive_scene import DriveScene

logger = logging.getLogger(__name__)

__all__ = ["DriveVideoTruth", "default_blockage_intervals", "make_drive_video"]

_CODECS = ("libx264", "mpeg4")  # H.264 where FFmpeg has it, else the always-built MPEG-4


@dataclass(frozen=True)
class DriveVideoTruth:
    """Ground truth of a generated drive video.

    `intervals` are half-open [start_s, end_s) spans in which road works are visible;
    frame i is shown at i / fps seconds. `codec` is the encoder actually used.
    """

    intervals: list[tuple[float, float]]
    fps: float
    n_frames: int
    duration_s: float
    codec: str = field(default="libx264")

    def contains(self, pts_seconds: float) -> bool:
        """True when a frame shown at `pts_seconds` shows the blockage."""
        return any(start <= pts_seconds < end for start, end in self.intervals)

    def blockage_frames(self) -> list[int]:
        """Indices of the frames that show the blockage."""
        return [i for i in range(self.n_frames) if self.contains(i / self.fps)]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description, for a truth file next to the video."""
        return {
            "intervals": [[start, end] for start, end in self.intervals],
            "fps": self.fps,
            "n_frames": self.n_frames,
            "duration_s": self.duration_s,
            "codec": self.codec,
        }


def default_blockage_intervals(
    duration_s: float, fps: float, seed: int
) -> list[tuple[float, float]]:
    """Two or three short blockages covering 5-8% of the drive, spread over it.

    The drive is cut into equal slots and each interval lands somewhere inside its
    own slot, so they never overlap and never bunch up. Ends are snapped to frame times
    (k / fps) so that every frame is unambiguously in or out.
    """
    rng = Random(seed)
    count = rng.choice((2, 3))
    total = rng.uniform(0.05, 0.08) * duration_s
    weights = [rng.uniform(0.7, 1.3) for _ in range(count)]
    slot = duration_s / count
    intervals: list[tuple[float, float]] = []
    for index, weight in enumerate(weights):
        length = total * weight / sum(weights)
        margin = 0.1 * slot
        lowest = index * slot + margin
        highest = max(lowest, (index + 1) * slot - margin - length)
        start = rng.uniform(lowest, highest)
        first = round(start * fps)
        last = max(first + 1, round((start + length) * fps))
        last = min(last, round(duration_s * fps))
        if last > first:
            intervals.append((first / fps, last / fps))
    return intervals


def _check_intervals(
    intervals: Sequence[tuple[float, float]], duration_s: float
) -> list[tuple[float, float]]:
    checked: list[tuple[float, float]] = []
    for pair in intervals:
        try:
            start, end = (float(value) for value in pair)
        except (TypeError, ValueError):
            raise InputError(
                f"a blockage interval must be a (start_s, end_s) pair, got {pair!r}"
            ) from None
        if not 0 <= start < end <= duration_s:
            raise InputError(
                f"blockage interval ({start:g}, {end:g}) is not inside "
                f"the video's 0-{duration_s:g} s"
            )
        if checked and start < checked[-1][1]:
            raise InputError("blockage intervals must be sorted and must not overlap")
        checked.append((start, end))
    return checked


def _check_settings(duration_s: float, fps: float, size: tuple[int, int]) -> None:
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"duration_s must be a positive number, got {duration_s!r}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= 120):
        raise InputError(f"fps must be between 0 and 120, got {fps!r}")
    if len(size) != 2 or any(not isinstance(side, int) or side < 32 or side % 2 for side in size):
        # yuv420p stores colour at half resolution, so H.264 needs even sides.
        raise InputError(f"size must be two even integers of at least 32, got {size!r}")


def _open_stream(
    container: av.container.OutputContainer, fps: float, size: tuple[int, int]
) -> tuple[av.VideoStream, str]:
    rate = Fraction(fps).limit_denominator(1001)
    for codec in _CODECS:
        try:
            av.codec.Codec(codec, "w")
        except ValueError:
            logger.info("encoder %s is not available in this FFmpeg build", codec)
            continue
        stream = cast(av.VideoStream, container.add_stream(codec, rate=rate))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast"}
        return stream, codec
    raise InputError("this FFmpeg build has no libx264 or mpeg4 encoder")


def make_drive_video(
    path: str | os.PathLike[str],
    *,
    duration_s: float = 120,
    fps: float = 10,
    size: tuple[int, int] = (320, 180),
    blockage_intervals: Sequence[tuple[float, float]] | None = None,
    seed: int = 0,
) -> DriveVideoTruth:
    """Render and encode a drive video to `path` (MP4) and return its ground truth.

    Without `blockage_intervals`, `default_blockage_intervals` picks them from `seed`.
    The same arguments always give the same frames. The file is written under a
    temporary name and renamed at the end, so a failed run leaves no half video.
    """
    _check_settings(duration_s, fps, size)
    n_frames = round(duration_s * fps)
    if n_frames < 1:
        raise InputError(f"a {duration_s:g} s video at {fps:g} fps has no frames")
    if blockage_intervals is None:
        intervals = default_blockage_intervals(duration_s, fps, seed)
    else:
        intervals = _check_intervals(blockage_intervals, duration_s)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    scene = DriveScene(
        n_frames=n_frames, fps=fps, size=size, blockage_intervals=intervals, seed=seed
    )
    began = time.perf_counter()
    try:
        with av.open(str(partial), mode="w", format="mp4") as container:
            stream, codec = _open_stream(container, fps, size)
            for index in range(n_frames):
                frame = av.VideoFrame.from_ndarray(scene.render(index), format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush the encoder's delayed frames
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    logger.info(
        "wrote %s: %d frames with %s in %.1f s, blockages %s",
        target,
        n_frames,
        codec,
        time.perf_counter() - began,
        intervals,
    )
    return DriveVideoTruth(
        intervals=intervals,
        fps=float(fps),
        n_frames=n_frames,
        duration_s=float(duration_s),
        codec=codec,
    )
