"""Window maths for segment vectors: where the windows of a video lie and how a window's frames pool.

A window covers [start, start + window); starts step by `stride` from 0. When the grid
does not reach the end of the video, one more window ending exactly at the end is added so
the last seconds are searchable too; a video shorter than one window gets a single window
over the whole of it. Windows holding no frame (sparse key frames) are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sisyphus_db.errors import InputError

DEFAULT_WINDOW = 4.0
_EPS = 1e-6


@dataclass(frozen=True)
class SegmentVector:
    """One window of a video: its time range, how many frames it pooled and the pooled vector."""

    start: float
    end: float
    frames: int
    vector: npt.NDArray[np.float32]


def check_window(window: float, stride: float | None) -> float:
    """The stride to use (default half the window); refuses non-positive lengths."""
    if not window > 0:
        raise InputError(f"--window must be > 0 seconds, got {window:g}")
    stride = window / 2.0 if stride is None else stride
    if not stride > 0:
        raise InputError(f"--stride must be > 0 seconds, got {stride:g}")
    return float(stride)


def window_bounds(duration: float, window: float, stride: float | None = None) -> list[tuple[float, float]]:
    """The (start, end) of every window over a video of `duration` seconds."""
    stride = check_window(window, stride)
    if duration <= window + _EPS:
        return [(0.0, round(max(duration, 0.0), 6))]
    bounds: list[tuple[float, float]] = []
    k = 0
    while k * stride + window <= duration + _EPS:
        start = round(k * stride, 6)
        bounds.append((start, round(start + window, 6)))
        k += 1
    if bounds[-1][1] < duration - _EPS:
        bounds.append((round(duration - window, 6), round(duration, 6)))
    return bounds


def pool_window(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Mean and max of the frames' vectors, each L2-normalised, concatenated and normalised again.

    The mean says what the window shows on the whole, the max keeps a short strong event
    (a flash, a passing object) that the mean would wash out; normalising each half first
    gives them equal weight in the cosine.
    """
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise InputError("expected at least one frame vector to pool")
    parts = [_unit(vectors.mean(axis=0)), _unit(vectors.max(axis=0))]
    return _unit(np.concatenate(parts)).astype(np.float32)


def segment_vectors(times: Sequence[float] | npt.NDArray[np.float64], vectors: npt.NDArray[np.float32], *,
                    duration: float | None, window: float, stride: float | None = None) -> list[SegmentVector]:
    """Pool the frames (at `times` seconds) of one video into its windows' vectors."""
    stamps = np.asarray(times, dtype=np.float64)
    if stamps.shape[0] != vectors.shape[0]:
        raise InputError(f"{stamps.shape[0]} frame times but {vectors.shape[0]} vectors")
    if stamps.size == 0:
        return []
    length = float(duration) if duration and duration > 0 else float(stamps.max())
    length = max(length, float(stamps.max()))
    segments: list[SegmentVector] = []
    for start, end in window_bounds(length, window, stride):
        last = end >= length - _EPS  # the last window keeps a frame stamped exactly at the end
        inside = (stamps >= start - _EPS) & ((stamps < end - _EPS) | (last & (stamps <= end + _EPS)))
        if inside.any():
            segments.append(SegmentVector(start, end, int(inside.sum()), pool_window(vectors[inside])))
    return segments


def _unit(vector: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)
