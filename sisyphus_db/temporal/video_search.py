"""Video-to-video search: segment candidates, then frame-by-frame alignment of each candidate.

1. The query clip's windows are pooled like the stored segments (same model and window).
2. Each query window's nearest stored segments vote for their videos (the best similarity
   per video and query window, summed): the candidate videos.
3. Each candidate's stored frames are aligned with the query's frames (temporal Hough
   voting, see `align`), which gives the score and the matching ranges.
The run is stored in search_runs (query kind 'video' or 'segment'); each result row
references the candidate frame nearest to match_start, and the ranges are in params.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.db.models import SearchResult, SearchRun
from sisyphus_db.errors import InputError
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.temporal.align import align
from sisyphus_db.temporal.segment_store import SEGMENTS, sources_frames, stored_windows
from sisyphus_db.temporal.video_query import QueryClip
from sisyphus_db.temporal.windows import segment_vectors

logger = logging.getLogger(__name__)

SEGMENT_DEPTH = 50  # nearest stored segments per query window


@dataclass(frozen=True)
class VideoHit:
    rank: int
    source_id: int
    source_uri: str
    score: float
    query_start: float
    query_end: float
    match_start: float
    match_end: float
    frame_id: int | None = None
    speed: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "source_id": self.source_id, "source_uri": self.source_uri,
                "score": round(self.score, 6), "query_start": round(self.query_start, 3),
                "query_end": round(self.query_end, 3), "match_start": round(self.match_start, 3),
                "match_end": round(self.match_end, 3)}


@dataclass
class VideoOutcome:
    run_id: int | None
    hits: list[VideoHit]
    params: dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "results": [hit.to_json() for hit in self.hits]}


@dataclass(frozen=True)
class SegmentMatrix:
    """Stored segments of one (model, window): ids, their video, range and unit vectors."""

    ids: npt.NDArray[np.int64]
    sources: npt.NDArray[np.int64]
    starts: npt.NDArray[np.float64]
    ends: npt.NDArray[np.float64]
    vectors: npt.NDArray[np.float32]


def choose_window(db: Database, model: StoredModel, window: float | None) -> tuple[float, float]:
    """The (window, stride) to search: the one asked for, or the one with the most stored segments."""
    windows = stored_windows(db, model.id)
    if not windows:
        raise InputError(f"there are no segments for {model.name}: run `sisyphus segments build`")
    if window is None:
        return windows[0][0], windows[0][1]
    for stored, stride, _ in windows:
        if abs(stored - window) < 1e-9:
            return stored, stride
    raise InputError(f"there are no {window:g} s segments for {model.name} (stored windows: "
                     f"{', '.join(f'{w:g}' for w, _, _ in windows)} s): run `sisyphus segments build --window {window:g}`")


def load_segments(db: Database, model: StoredModel, window: float) -> SegmentMatrix:
    from sisyphus_db.store.vectors import model_vectors

    ids, vectors = model_vectors(db, model.id, model.dim, table=SEGMENTS)
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT id, source_id, start_seconds, end_seconds, window_seconds "
                                    "FROM segments WHERE model_id = :m ORDER BY id"), {"m": model.id}).all()
    meta = {int(r[0]): r for r in rows}
    keep = np.array([int(i) in meta and abs(float(meta[int(i)][4]) - window) < 1e-9 for i in ids], dtype=bool)
    ids, vectors = ids[keep], vectors[keep]
    return SegmentMatrix(ids, np.array([meta[int(i)][1] for i in ids], dtype=np.int64),
                         np.array([meta[int(i)][2] for i in ids], dtype=np.float64),
                         np.array([meta[int(i)][3] for i in ids], dtype=np.float64), vectors)


CENTRE_SAMPLE = 20_000  # frames averaged for the corpus's mean vector


def frame_centre(db: Database, model: StoredModel) -> npt.NDArray[np.float32] | None:
    """The mean of (up to CENTRE_SAMPLE of) the model's frame vectors: the common component
    that alignment subtracts (see `align`). The first rows stored are a fair sample of what
    a typical frame looks like and cost one short scan."""
    with db.copy_connection() as conn:
        row = conn.execute("SELECT avg(vec) FROM (SELECT vec FROM embeddings WHERE model_id = %s LIMIT %s) s",
                           (model.id, CENTRE_SAMPLE)).fetchone()
    if row is None or row[0] is None:
        return None
    return np.asarray(row[0].to_numpy(), dtype=np.float32)


def query_segments(clip: QueryClip, window: float, stride: float) -> tuple[npt.NDArray[np.float32], list[tuple[float, float]]]:
    if clip.duration + 1e-6 < window:
        raise InputError(f"the query is {clip.duration:.2f} s long, shorter than one window ({window:g} s): "
                         "give a longer clip or search segments built with a smaller --window")
    segments = segment_vectors(clip.times, clip.vectors, duration=clip.duration, window=window, stride=stride)
    return (np.stack([s.vector for s in segments]).astype(np.float32),
            [(s.start, s.end) for s in segments])


def nearest_segments(db: Database, model: StoredModel, matrix: SegmentMatrix, queries: npt.NDArray[np.float32],
                     depth: int = SEGMENT_DEPTH) -> tuple[list[list[tuple[int, float]]], str, list[str]]:
    """Per query window, the nearest stored segments of the window as (segment id, cosine similarity).

    Through the faiss sidecar of kind 'segments' when one is registered (ANN candidates,
    re-ranked exactly with the stored vectors, other windows dropped), else exactly over
    the window's segments. Also returns the backend used and warnings (a stale sidecar).
    """
    from sisyphus_db.store.indexes import find_index

    record = find_index(db, model.id, "faiss", SEGMENTS.kind)
    if record is None or record.state != "ready" or matrix.ids.size == 0:
        if matrix.ids.size == 0:
            return [[] for _ in queries], "exact", []
        similarity = queries @ matrix.vectors.T
        take = min(depth, matrix.ids.size)
        nearest = np.argpartition(-similarity, take - 1, axis=1)[:, :take]
        return ([[(int(matrix.ids[c]), float(similarity[row, c])) for c in cols] for row, cols in enumerate(nearest)],
                "exact", [])
    from sisyphus_db.ann.search import search
    from sisyphus_db.search.indexing import build_command, load_faiss_index

    warnings: list[str] = []
    pending = np.flatnonzero(matrix.ids > record.watermark)
    if pending.size:
        warnings.append(f"{pending.size} segments are newer than the segment index and were compared exactly: "
                        f"run `{build_command(SEGMENTS.kind, 'update')}`")
    index = load_faiss_index(record)
    # Over-fetch: segments of other windows share the index and are dropped here.
    _, found = search(index, queries, min(int(index.ntotal), 2 * depth), nprobe=record.params.get("nprobe"))
    position = {int(i): n for n, i in enumerate(matrix.ids)}
    lists = []
    for row, ids in enumerate(found):
        columns = [position[int(i)] for i in ids if int(i) in position]
        # Segments added since the index was built (e.g. a new window) are not in it: compare them exactly.
        columns = list(dict.fromkeys([*columns, *pending.tolist()]))
        sims = matrix.vectors[columns] @ queries[row] if columns else np.empty(0, dtype=np.float32)
        best = np.argsort(-sims, kind="stable")[:depth]
        lists.append([(int(matrix.ids[columns[c]]), float(sims[c])) for c in best])
    return lists, "faiss", warnings


def segment_votes(matrix: SegmentMatrix, neighbours: list[list[tuple[int, float]]]) -> dict[int, float]:
    """Per video: the sum over query windows of its best segment similarity among the nearest."""
    source_of = {int(i): int(s) for i, s in zip(matrix.ids, matrix.sources, strict=True)}
    scores: dict[int, float] = {}
    for found in neighbours:
        best: dict[int, float] = {}
        for segment_id, similarity in found:
            source = source_of[segment_id]
            best[source] = max(best.get(source, -1.0), similarity)
        for source, value in best.items():
            scores[source] = scores.get(source, 0.0) + value
    return scores


def search_video(db: Database, model: StoredModel, clip: QueryClip, *, k: int = 10, window: float | None = None,
                 candidates: int | None = None, save: bool = True, name: str | None = None) -> VideoOutcome:
    """Rank stored videos against the query clip with aligned ranges; store the run unless save is False."""
    if not 1 <= k <= 1000:
        raise InputError(f"--k must be between 1 and 1000, got {k}")
    started = time.perf_counter()
    window, stride = choose_window(db, model, window)
    queries, _ = query_segments(clip, window, stride)
    matrix = load_segments(db, model, window)
    neighbours, backend, warnings = nearest_segments(db, model, matrix, queries)
    votes = segment_votes(matrix, neighbours)
    shortlist = sorted(votes, key=lambda source: -votes[source])[: candidates or max(3 * k, 10)]
    centre = frame_centre(db, model)
    hits: list[VideoHit] = []
    candidates_frames = sources_frames(db, model, shortlist)
    for source_id in shortlist:
        frames = candidates_frames.get(source_id)
        if frames is None:
            continue
        found = align(clip.times, clip.vectors, frames.times, frames.vectors, match_duration=frames.duration,
                      centre=centre)
        if found is None:
            continue
        nearest = int(np.abs(frames.times - found.match_start).argmin())
        hits.append(VideoHit(0, source_id, frames.uri, found.score, found.query_start, found.query_end,
                             found.match_start, found.match_end, int(frames.frame_ids[nearest]), found.speed))
    hits.sort(key=lambda hit: (-hit.score, hit.source_id))
    hits = [replace(hit, rank=rank) for rank, hit in enumerate(hits[:k], start=1)]
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    params = {"model": model.name, "window": window, "stride": stride, "candidates": len(shortlist),
              "segment_backend": backend,
              "query_segments": int(queries.shape[0]), "k": k,
              "ranges": [{**hit.to_json(), "speed": hit.speed} for hit in hits]}
    run_id = save_video_run(db, model, clip.description, k, params, elapsed_ms, name, hits) if save else None
    return VideoOutcome(run_id, hits, params, elapsed_ms, warnings)


def save_video_run(db: Database, model: StoredModel, query: dict[str, Any], k: int, params: dict[str, Any],
                   elapsed_ms: float, name: str | None, hits: list[VideoHit]) -> int:
    with db.transaction() as conn:
        run_id = int(conn.execute(sa.insert(SearchRun).values(
            name=name, model_id=model.id, query=query, filter=None, backend="segments+align", k=k, params=params,
            elapsed_ms=elapsed_ms).returning(SearchRun.id)).scalar_one())
        rows = [{"run_id": run_id, "rank": hit.rank, "frame_id": hit.frame_id, "distance": 1.0 - hit.score}
                for hit in hits if hit.frame_id is not None]
        if rows:
            conn.execute(sa.insert(SearchResult), rows)
    return run_id


__all__ = ["VideoHit", "VideoOutcome", "choose_window", "search_video"]
