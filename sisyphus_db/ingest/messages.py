"""What travels between the ingest runner and its decoding workers (all picklable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from sisyphus_db.media.keyframes import DEFAULT_MAX_GAP_SECONDS


@dataclass(frozen=True)
class KeyframeOptions:
    method: str = "scene"
    fps: float | None = None
    threshold: float | None = None
    max_gap_seconds: float | None = DEFAULT_MAX_GAP_SECONDS


@dataclass(frozen=True)
class VideoTask:
    source_id: int
    path: str
    keyframes: KeyframeOptions
    preprocessing: dict[str, Any]
    # Frame indexes already stored under this model: decoded (selection must see them)
    # but neither encoded nor sent again.
    stored_indexes: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ImageTask:
    source_id: int
    source_uri: str
    paths: tuple[str, ...]
    preprocessing: dict[str, Any]
    max_pixels: int


@dataclass
class Candidate:
    """A frame that may be stored: pixels prepared for the model, plus its provenance."""

    source_id: int
    frame_index: int
    pts_seconds: float
    width: int
    height: int
    prepared: np.ndarray
    keyframe_method: str
    keyframe_score: float | None
    # Video frames: the JPEG to write if the frame is kept. Images: None (referenced in place).
    jpeg: bytes | None = None
    path: str | None = None
    sha256: str | None = None
    captured_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceInfo:
    source_id: int
    details: dict[str, Any]


@dataclass(frozen=True)
class Candidates:
    source_id: int
    items: list[Candidate]


@dataclass(frozen=True)
class InputFailed:
    source_id: int
    uri: str
    reason: str
    stage: str


@dataclass(frozen=True)
class TaskDone:
    source_id: int
    # A video that broke mid-stream: its frames before the break are kept.
    failed: InputFailed | None = None
