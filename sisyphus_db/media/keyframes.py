"""Streaming key-frame selection: decide frame by frame which decoded frames to keep.

Each selector sees frames in decode order and keeps only a little state (the last kept
frame's signature or embedding), so a many-hour video streams through in constant
memory. Selectors are plain top-level classes and therefore picklable for worker pools.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from sisyphus_db.errors import InputError
from sisyphus_db.media.video import VideoFrame

logger = logging.getLogger(__name__)

KEYFRAME_METHODS: tuple[str, ...] = ("scene", "similarity", "iframe", "fps")
DEFAULT_METHOD = "scene"
DEFAULT_SCENE_THRESHOLD = 0.3
DEFAULT_SIMILARITY_THRESHOLD = 0.95
# Continuous drive footage drifts slowly (0.05-0.2 in 5 s against a 0.3 threshold), so the
# gap sets its sampling: at 2 s a rare event lasting a couple of seconds still gets a frame.
DEFAULT_MAX_GAP_SECONDS = 2.0
DEFAULT_MIN_GAP_SECONDS = 0.25

# Signature geometry: small enough to be cheap on a 4K frame (one resize), large enough
# that a pedestrian entering the frame still moves the numbers.
_THUMB_SIZE = (32, 24)
_HIST_SIZE = (64, 48)
_HIST_BINS = (8, 6, 6)  # Y, Cb, Cr
# Sampling-step tolerance, as in video.iter_video_frames: pts in coarse time bases land a
# hair before the exact step.
_PTS_EPSILON = 1e-3


@dataclass(frozen=True)
class KeyframeDecision:
    """Why a frame was kept: the method and its score (higher = more different/novel)."""

    method: str
    score: float


@runtime_checkable
class KeyframeSelector(Protocol):
    """Common interface: offer each decoded frame in order; a decision means keep it."""

    needs_embedding: bool

    def offer(self, frame: VideoFrame, embedding: np.ndarray | None = None) -> KeyframeDecision | None: ...


@dataclass(frozen=True)
class FrameSignature:
    """A cheap summary of a frame: joint YCbCr histogram and a tiny RGB thumbnail."""

    histogram: np.ndarray
    thumbnail: np.ndarray


def frame_signature(rgb: np.ndarray) -> FrameSignature:
    """Summarise an H x W x 3 uint8 frame for scene-change scoring."""
    image = Image.fromarray(rgb)
    small = image.resize(_HIST_SIZE, Image.Resampling.BOX)
    # YCbCr rather than HSV: hue is undefined (pure noise) on the grey pixels that fill
    # roads and skies, while Cb/Cr are simply near the centre there.
    ycc = np.asarray(small.convert("YCbCr"), dtype=np.float64).reshape(-1, 3)
    histogram = _soft_histogram(ycc, _HIST_BINS)
    thumbnail = np.asarray(small.resize(_THUMB_SIZE, Image.Resampling.BOX), dtype=np.float64) / 255.0
    return FrameSignature(histogram=histogram, thumbnail=thumbnail)


def _soft_histogram(values: np.ndarray, bins: tuple[int, int, int]) -> np.ndarray:
    """Joint histogram of N x 3 values in 0..255, each pixel shared between neighbouring bins.

    Hard bins make a pixel sitting on a bin edge flip bins on compression noise, and a
    smooth gradient has many such pixels; linear sharing makes the histogram a
    continuous function of the pixel values.
    """
    lows, fracs = [], []
    for axis, count in enumerate(bins):
        position = values[:, axis] * (count / 256.0) - 0.5
        low = np.clip(np.floor(position), 0, count - 1)
        lows.append(low.astype(np.int64))
        fracs.append(np.clip(position - low, 0.0, 1.0))
    histogram = np.zeros(bins[0] * bins[1] * bins[2], dtype=np.float64)
    for corner in range(8):
        index = np.zeros(len(values), dtype=np.int64)
        weight = np.ones(len(values), dtype=np.float64)
        for axis, count in enumerate(bins):
            upper = (corner >> axis) & 1
            index = index * count + np.minimum(lows[axis] + upper, count - 1)
            weight = weight * (fracs[axis] if upper else 1.0 - fracs[axis])
        histogram += np.bincount(index, weights=weight, minlength=histogram.size)
    return np.asarray(histogram / histogram.sum(), dtype=np.float64)


def signature_distance(a: FrameSignature, b: FrameSignature) -> float:
    """0 (identical) .. 1 (nothing alike): the larger of a histogram and a pixel difference.

    The histogram term (total variation) catches cuts between scenes of different colour
    make-up and ignores motion; the pixel term (mean absolute difference of thumbnails)
    catches cuts between scenes of similar colours and the layout drift of a continuous
    drive, where the colour make-up hardly changes. Either one alone is enough to keep.
    """
    histogram_term = 0.5 * float(np.abs(a.histogram - b.histogram).sum())
    pixel_term = float(np.abs(a.thumbnail - b.thumbnail).mean())
    return max(histogram_term, pixel_term)


class SceneSelector:
    """Keep a frame when it differs from the last kept one by more than `threshold`.

    Comparing with the last kept frame (not the previous one) means slow drift, as in a
    continuous drive, adds up until a new sample is taken, while a cut is kept at once.

    The first frame is always kept (score 1.0). A frame closer than `min_gap_seconds` to
    the last kept one is never kept (no bursts on flicker); the next frame that still
    differs is kept once the gap has passed. A frame `max_gap_seconds` or more after the
    last kept one is kept anyway, so a long unchanging shot is still sampled.
    """

    needs_embedding = False
    method = "scene"

    def __init__(
        self,
        threshold: float = DEFAULT_SCENE_THRESHOLD,
        *,
        max_gap_seconds: float | None = DEFAULT_MAX_GAP_SECONDS,
        min_gap_seconds: float = DEFAULT_MIN_GAP_SECONDS,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise InputError(f"scene threshold must be in (0, 1], got {threshold}")
        if max_gap_seconds is not None and max_gap_seconds <= 0:
            raise InputError(f"max gap must be > 0 seconds, got {max_gap_seconds}")
        self.threshold = threshold
        self.max_gap_seconds = max_gap_seconds
        self.min_gap_seconds = min_gap_seconds
        self._last_signature: FrameSignature | None = None
        self._last_pts: float = 0.0

    def offer(self, frame: VideoFrame, embedding: np.ndarray | None = None) -> KeyframeDecision | None:
        signature = frame_signature(frame.rgb)
        if self._last_signature is None:
            return self._keep(signature, frame.pts_seconds, 1.0)
        gap = frame.pts_seconds - self._last_pts
        if gap + _PTS_EPSILON < self.min_gap_seconds:
            return None
        score = signature_distance(signature, self._last_signature)
        if score > self.threshold:
            return self._keep(signature, frame.pts_seconds, score)
        if self.max_gap_seconds is not None and gap + _PTS_EPSILON >= self.max_gap_seconds:
            return self._keep(signature, frame.pts_seconds, score)
        return None

    def _keep(self, signature: FrameSignature, pts: float, score: float) -> KeyframeDecision:
        self._last_signature = signature
        self._last_pts = pts
        return KeyframeDecision(self.method, score)


class SimilaritySelector:
    """The original sisyphus rule: keep when cosine similarity to the last kept embedding < threshold."""

    needs_embedding = True
    method = "similarity"

    def __init__(self, threshold: float = DEFAULT_SIMILARITY_THRESHOLD) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise InputError(f"similarity threshold must be in [-1, 1], got {threshold}")
        self.threshold = threshold
        self._last: np.ndarray | None = None

    def offer(self, frame: VideoFrame, embedding: np.ndarray | None = None) -> KeyframeDecision | None:
        if embedding is None:
            raise ValueError("the similarity selector needs the frame's embedding")
        vector = np.asarray(embedding, dtype=np.float64).ravel()
        norm = float(np.linalg.norm(vector))
        # A zero vector has no direction; treat it as unlike anything so it is kept.
        unit = vector / norm if norm > 0 else vector
        if self._last is None:
            self._last = unit
            return KeyframeDecision(self.method, 1.0)
        if unit.shape != self._last.shape:
            raise ValueError(f"embedding dimension changed from {self._last.shape[0]} to {unit.shape[0]}")
        similarity = float(unit @ self._last)
        if similarity < self.threshold:
            self._last = unit
            return KeyframeDecision(self.method, 1.0 - similarity)
        return None


class IframeSelector:
    """Keep the codec's key frames (decode with keyframes_only=True to skip the rest cheaply)."""

    needs_embedding = False
    method = "iframe"

    def offer(self, frame: VideoFrame, embedding: np.ndarray | None = None) -> KeyframeDecision | None:
        return KeyframeDecision(self.method, 1.0) if frame.is_keyframe else None


class FpsSelector:
    """Uniform resampling: keep the first frame whose pts reaches each 1/fps step.

    Steps count from the first frame's pts, so a stream starting at pts 0.4 s is
    sampled at 0.4, 0.4 + 1/fps, ... A step with no frame in it (a gap in the stream,
    or fps above the video's rate) is simply skipped, never filled with duplicates.
    """

    needs_embedding = False
    method = "fps"

    def __init__(self, fps: float) -> None:
        if fps is None or not math.isfinite(fps) or fps <= 0:
            raise InputError(f"keyframe method 'fps' needs a rate > 0 frames per second, got {fps}")
        self.fps = float(fps)
        self._first_pts: float | None = None
        self._next_step = 0

    def offer(self, frame: VideoFrame, embedding: np.ndarray | None = None) -> KeyframeDecision | None:
        if self._first_pts is None:
            self._first_pts = frame.pts_seconds
        elapsed = frame.pts_seconds - self._first_pts + _PTS_EPSILON
        if elapsed < self._next_step / self.fps:
            return None
        self._next_step = math.floor(elapsed * self.fps) + 1
        return KeyframeDecision(self.method, 1.0)


def make_selector(
    method: str,
    *,
    fps: float | None = None,
    threshold: float | None = None,
    video_fps: float | None = None,
    max_gap_seconds: float | None = DEFAULT_MAX_GAP_SECONDS,
) -> KeyframeSelector:
    """A fresh selector (one per video) for `method`: scene, similarity, iframe or fps.

    `threshold` is the scene difference (default 0.3) or the cosine similarity (default
    0.95); `fps` is the sampling rate, required for 'fps'. `video_fps` is the source
    rate, used only to warn when resampling asks for more frames than the video has.
    `max_gap_seconds` (scene only; None = never) forces a key frame after that long.
    """
    if method == "scene":
        return SceneSelector(DEFAULT_SCENE_THRESHOLD if threshold is None else threshold,
                             max_gap_seconds=max_gap_seconds)
    if method == "similarity":
        return SimilaritySelector(DEFAULT_SIMILARITY_THRESHOLD if threshold is None else threshold)
    if method == "iframe":
        return IframeSelector()
    if method == "fps":
        if fps is None:
            raise InputError("keyframe method 'fps' needs a rate: give fps > 0")
        selector = FpsSelector(fps)
        if video_fps is not None and fps > video_fps:
            logger.warning(
                "sampling at %.3g fps, above the video's %.3g fps: every frame is kept", fps, video_fps
            )
        return selector
    raise InputError(f"unknown keyframe method {method!r}: expected one of {', '.join(KEYFRAME_METHODS)}")
