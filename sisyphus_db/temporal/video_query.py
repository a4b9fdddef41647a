"""A query clip as frame times and vectors: a video file decoded and embedded in memory (never
stored), or a stored source's time range (`--segment SOURCE_ID:START-END`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.temporal.segment_store import source_frames

DEFAULT_QUERY_FPS = 2.0
_SEGMENT = re.compile(r"^\s*(\d+)\s*:\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*$")


@dataclass(frozen=True)
class QueryClip:
    times: npt.NDArray[np.float64]
    vectors: npt.NDArray[np.float32]
    duration: float
    description: dict[str, Any]


def clip_from_video(path: Path, model: StoredModel, *, fps: float = DEFAULT_QUERY_FPS, device: str = "auto",
                    max_seconds: float | None = None) -> QueryClip:
    """Decode `fps` frames a second and embed them with the index's model."""
    from sisyphus_db.embed.embedder import load_embedder
    from sisyphus_db.media.video import iter_video_frames

    if not fps > 0:
        raise InputError(f"--fps must be > 0, got {fps:g}")
    frames = []
    for frame in iter_video_frames(path, fps=fps):
        if max_seconds is not None and frames and frame.pts_seconds - frames[0].pts_seconds > max_seconds:
            break
        frames.append(frame)
    embedder = load_embedder(model.name, device=device)
    if embedder.spec.dim != model.dim:
        raise InputError(f"model {model.name} now makes {embedder.spec.dim}-d vectors, the stored ones are {model.dim}-d")
    start = frames[0].pts_seconds
    times = np.array([frame.pts_seconds - start for frame in frames], dtype=np.float64)
    vectors = embedder.embed_images([frame.rgb for frame in frames])
    duration = float(times[-1] + 1.0 / fps)
    return QueryClip(times, vectors, duration, {"kind": "video", "path": str(Path(path).resolve()), "fps": fps})


def parse_segment(text: str) -> tuple[int, float, float]:
    match = _SEGMENT.match(text)
    if match is None:
        raise InputError(f"--segment expects SOURCE_ID:START-END in seconds (e.g. 12:30-40), got {text!r}")
    source_id, start, end = int(match.group(1)), float(match.group(2)), float(match.group(3))
    if end <= start:
        raise InputError(f"--segment {text}: END must be after START")
    return source_id, start, end


def clip_from_segment(db: Database, model: StoredModel, text: str) -> QueryClip:
    """The stored frames of a source between START and END (times relative to START)."""
    source_id, start, end = parse_segment(text)
    with db.transaction() as conn:
        kind = conn.execute(sa.text("SELECT kind FROM sources WHERE id = :s"), {"s": source_id}).scalar()
    if kind is None:
        raise InputError(f"--segment {text}: there is no source {source_id}")
    if kind != "video":
        raise InputError(f"--segment {text}: source {source_id} is an image {kind}, not a video")
    frames = source_frames(db, model, source_id)
    inside = (frames.times >= start) & (frames.times < end)
    if not inside.any():
        raise InputError(f"--segment {text}: source {source_id} has no {model.name} frames between {start:g} and {end:g} s")
    return QueryClip(frames.times[inside] - start, frames.vectors[inside], end - start,
                     {"kind": "segment", "source_id": source_id, "start": start, "end": end})
