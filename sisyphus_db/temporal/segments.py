"""`sisyphus segments build`: pool every ingested video's frame vectors into window vectors.

Incremental and resumable: each video's segments are written in one transaction, and a
video that already has segments of this window under the model is skipped, so running it
again after an ingest (or after a kill) only does the new videos. `run_ingest` callers
can call `build_segments` right after an ingest to keep them current.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sisyphus_db.db.database import Database
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.temporal.segment_store import (
    segment_count,
    source_frames,
    sources_without_segments,
    store_segments,
)
from sisyphus_db.temporal.windows import DEFAULT_WINDOW, check_window, segment_vectors

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]


@dataclass
class SegmentsReport:
    model: str
    window: float
    stride: float
    sources: int
    segments_added: int
    segments_total: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "window": self.window, "stride": self.stride, "sources": self.sources,
                "segments_added": self.segments_added, "segments_total": self.segments_total,
                "seconds": round(self.seconds, 3)}


def build_segments(db: Database, model: StoredModel, *, window: float = DEFAULT_WINDOW, stride: float | None = None,
                   progress: Progress | None = None) -> SegmentsReport:
    """Segments for every complete video that has none of this window yet under the model."""
    stride = check_window(window, stride)
    started = time.perf_counter()
    todo = sources_without_segments(db, model.id, window)
    if progress is not None:
        progress("segments: videos", 0, len(todo))
    added = 0
    for source_id in todo:
        frames = source_frames(db, model, source_id)
        segments = segment_vectors(frames.times, frames.vectors, duration=frames.duration, window=window,
                                   stride=stride)
        added += store_segments(db, model.id, source_id, window, stride, segments)
        if progress is not None:
            progress("segments: videos", 1, len(todo))
    logger.info("stored %d segments of %d videos (window %.3g s, stride %.3g s)", added, len(todo), window, stride)
    return SegmentsReport(model.name, window, stride, len(todo), added, segment_count(db, model.id),
                          time.perf_counter() - started)


def refresh_segments(db: Database, model_name: str, progress: Progress | None = None) -> int:
    """After an ingest: build the new videos' segments for every window already stored under the model.

    Nothing happens until someone has run `sisyphus segments build` once for the model;
    from then on each ingest keeps the segments current. Returns the segments added.
    """
    from sisyphus_db.store.registry import find_model
    from sisyphus_db.temporal.segment_store import stored_windows

    model = find_model(db, model_name)
    if model is None:
        return 0
    return sum(build_segments(db, model, window=window, stride=stride, progress=progress).segments_added
               for window, stride, _ in stored_windows(db, model.id))
