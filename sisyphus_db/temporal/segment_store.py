"""Segment rows in PostgreSQL: the frames a video's windows pool, and writing/reading segment vectors.

Segment vectors are twice the frame model's dimension (mean and max concatenated) and are
stored under the frame model's id; the shared vector table description (store.vectors.SEGMENTS,
dim_factor 2) lets the registry code (`sisyphus index build|update|verify --kind segments`)
build, update and verify their faiss sidecar like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from pgvector import HalfVector

from sisyphus_db.db.database import Database
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import SEGMENTS, vectors_by_id
from sisyphus_db.temporal.windows import SegmentVector

__all__ = ["SEGMENTS", "SourceFrames", "StoredSegment", "source_frames", "store_segments"]


@dataclass(frozen=True)
class SourceFrames:
    """A video's frames that have a vector under a model, in time order."""

    source_id: int
    uri: str
    duration: float | None
    frame_ids: npt.NDArray[np.int64]
    times: npt.NDArray[np.float64]
    vectors: npt.NDArray[np.float32]


@dataclass(frozen=True)
class StoredSegment:
    id: int
    source_id: int
    start: float
    end: float


def sources_without_segments(db: Database, model_id: int, window: float) -> list[int]:
    """Complete video sources with vectors under the model and no segments of this window yet."""
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT s.id FROM sources s WHERE s.kind = 'video' AND s.state = 'complete' "
            "AND EXISTS (SELECT 1 FROM frames f JOIN embeddings e ON e.frame_id = f.id "
            "            WHERE f.source_id = s.id AND e.model_id = :m) "
            "AND NOT EXISTS (SELECT 1 FROM segments g WHERE g.source_id = s.id AND g.model_id = :m "
            "                AND g.window_seconds = :w) ORDER BY s.id"), {"m": model_id, "w": window}).all()
    return [int(row[0]) for row in rows]


def source_frames(db: Database, model: StoredModel, source_id: int) -> SourceFrames:
    with db.transaction() as conn:
        head = conn.execute(sa.text("SELECT uri, duration_seconds FROM sources WHERE id = :s"),
                            {"s": source_id}).one()
        rows = conn.execute(sa.text(
            "SELECT f.id, f.pts_seconds FROM frames f JOIN embeddings e ON e.frame_id = f.id "
            "WHERE f.source_id = :s AND e.model_id = :m ORDER BY f.pts_seconds, f.id"),
            {"s": source_id, "m": model.id}).all()
    order = np.array([row[0] for row in rows], dtype=np.int64)
    times = np.array([row[1] for row in rows], dtype=np.float64)
    ids, vectors = vectors_by_id(db, model.id, model.dim, order)
    position = {int(frame): index for index, frame in enumerate(ids)}
    vectors = vectors[[position[int(frame)] for frame in order]] if order.size else vectors
    return SourceFrames(source_id, str(head[0]), head[1], order, times, vectors)


def sources_frames(db: Database, model: StoredModel, source_ids: Sequence[int]) -> dict[int, SourceFrames]:
    """source_frames for several videos in three round trips (search aligns many candidates)."""
    if not source_ids:
        return {}
    with db.transaction() as conn:
        heads = {int(r[0]): (str(r[1]), r[2]) for r in conn.execute(sa.text(
            "SELECT id, uri, duration_seconds FROM sources WHERE id = ANY(:s)"), {"s": list(source_ids)}).all()}
        rows = conn.execute(sa.text(
            "SELECT f.source_id, f.id, f.pts_seconds FROM frames f JOIN embeddings e ON e.frame_id = f.id "
            "WHERE f.source_id = ANY(:s) AND e.model_id = :m ORDER BY f.source_id, f.pts_seconds, f.id"),
            {"s": list(source_ids), "m": model.id}).all()
    ids, vectors = vectors_by_id(db, model.id, model.dim, [row[1] for row in rows])
    position = {int(frame): index for index, frame in enumerate(ids)}
    grouped: dict[int, list[tuple[int, float]]] = {}
    for source, frame, pts in rows:
        if int(frame) in position:
            grouped.setdefault(int(source), []).append((int(frame), float(pts)))
    result = {}
    for source, frames in grouped.items():
        order = np.array([f for f, _ in frames], dtype=np.int64)
        result[source] = SourceFrames(source, heads[source][0], heads[source][1], order,
                                      np.array([t for _, t in frames], dtype=np.float64),
                                      vectors[[position[int(f)] for f in order]])
    return result


def store_segments(db: Database, model_id: int, source_id: int, window: float, stride: float,
                   segments: Sequence[SegmentVector]) -> int:
    """Insert a source's segments in one transaction; windows already stored are skipped."""
    if not segments:
        return 0
    with db.copy_connection() as conn:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO segments (source_id, model_id, start_seconds, end_seconds, window_seconds, "
                "stride_seconds, frame_count, vec) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (source_id, model_id, start_seconds, window_seconds) DO NOTHING",
                [(source_id, model_id, s.start, s.end, window, stride, s.frames, HalfVector(s.vector))
                 for s in segments])
            return max(0, cursor.rowcount)


def stored_windows(db: Database, model_id: int) -> list[tuple[float, float, int]]:
    """(window, stride, count) of the segments stored under a model, most segments first."""
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT window_seconds, min(stride_seconds), count(*) FROM segments WHERE model_id = :m "
            "GROUP BY window_seconds ORDER BY count(*) DESC, window_seconds"), {"m": model_id}).all()
    return [(float(r[0]), float(r[1]), int(r[2])) for r in rows]


def segments_by_id(db: Database, ids: Sequence[int]) -> dict[int, StoredSegment]:
    if not ids:
        return {}
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT id, source_id, start_seconds, end_seconds FROM segments "
                                    "WHERE id = ANY(:ids)"), {"ids": [int(i) for i in ids]}).all()
    return {int(r[0]): StoredSegment(int(r[0]), int(r[1]), float(r[2]), float(r[3])) for r in rows}


def segment_ids_of_window(db: Database, model_id: int, window: float) -> npt.NDArray[np.int64]:
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT id FROM segments WHERE model_id = :m AND window_seconds = :w "
                                    "ORDER BY id"), {"m": model_id, "w": window}).all()
    return np.array([r[0] for r in rows], dtype=np.int64)


def segment_count(db: Database, model_id: int) -> int:
    with db.transaction() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM segments WHERE model_id = :m"),
                                {"m": model_id}).scalar_one())
