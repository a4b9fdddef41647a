"""Video copy detection with localisation (`sisyphus eval videocopy`).

The given videos are ingested (frames at a fixed rate) and their segments built; each is
then copied with every transformation (low-bitrate re-encode, half size, crop, colour
shift, 1.25x speed, a 3-6 s excerpt, an excerpt inserted into generated footage), and each
copy queries the corpus through three methods:

- `frames`: every query frame's nearest stored frames vote for their video (summed
  similarity); the range is the span of the top video's voted frames;
- `segments`: every query window's nearest stored segments vote (best per video, summed);
  the range is the span of the top video's best segments;
- `segments+align`: `search --video` (segment candidates, then frame alignment).

Per method and transformation: `r@1` (the source ranks first), `map` (mean average
precision; with one relevant video per query it is the mean reciprocal rank of the source)
and `tiou` (temporal IoU of the top result's matched range with the true range, 0 when the
top result is another video). Stored in eval_runs (kind 'videocopy') / eval_metrics
(backend = method, subset = transformation or 'overall').
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.embed.models import DEFAULT_MODEL
from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.records import MetricRow, save_eval_run
from sisyphus_db.ingest.messages import KeyframeOptions
from sisyphus_db.ingest.pipeline import IngestObserver, IngestOptions, run_ingest
from sisyphus_db.media.discover import discover
from sisyphus_db.store.registry import StoredModel, find_model
from sisyphus_db.store.vectors import model_vectors
from sisyphus_db.temporal.align import temporal_iou
from sisyphus_db.temporal.segments import build_segments
from sisyphus_db.temporal.transforms import TRANSFORMATIONS, CopyTruth, make_copies
from sisyphus_db.temporal.video_query import QueryClip, clip_from_video
from sisyphus_db.temporal.video_search import (
    SegmentMatrix,
    load_segments,
    nearest_segments,
    query_segments,
    search_video,
    segment_votes,
)

logger = logging.getLogger(__name__)

METHODS = ("frames", "segments", "segments+align")
Progress = Callable[[str, int, int | None], None]
Ranked = list[tuple[int, tuple[float, float] | None]]  # (source id, matched range) best first


@dataclass(frozen=True)
class VideoCopyOptions:
    model: str = DEFAULT_MODEL
    device: str = "auto"
    fps: float = 2.0
    window: float = 3.0
    stride: float | None = None
    transformations: tuple[str, ...] = TRANSFORMATIONS
    seed: int = 0
    workers: int | None = None


@dataclass
class VideoCopyReport:
    run_id: int
    videos: int
    queries: int
    model: str
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0
    query_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": "videocopy", "videos": self.videos, "queries": self.queries,
                "model": self.model, "seconds": round(self.seconds, 3),
                "query_ms": {k: round(v, 1) for k, v in self.query_ms.items()}, "results": self.results}


def rank_by_frames(clip: QueryClip, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32],
                   frame_source: dict[int, int], frame_time: dict[int, float], depth: int = 10) -> Ranked:
    """Frame voting: each query frame's `depth` nearest frames add their similarity to their video."""
    similarity = clip.vectors @ vectors.T
    take = min(depth, ids.size)
    nearest = np.argpartition(-similarity, take - 1, axis=1)[:, :take]
    votes: dict[int, float] = {}
    best_time: dict[int, list[float]] = {}
    for row, columns in enumerate(nearest):
        seen: dict[int, tuple[float, float]] = {}
        for column in columns:
            frame = int(ids[column])
            source, value = frame_source[frame], float(similarity[row, column])
            if source not in seen or value > seen[source][0]:
                seen[source] = (value, frame_time[frame])
        for source, (value, moment) in seen.items():
            votes[source] = votes.get(source, 0.0) + value
            best_time.setdefault(source, []).append(moment)
    ranked = sorted(votes, key=lambda s: -votes[s])
    step = 1.0 / max(1e-6, float(np.median(np.diff(clip.times)))) if clip.times.size > 1 else 1.0
    return [(s, (min(best_time[s]), max(best_time[s]) + 1.0 / step)) for s in ranked]


def rank_by_segments(db: Database, model: StoredModel, matrix: SegmentMatrix, clip: QueryClip, window: float,
                     stride: float) -> Ranked:
    """Segment voting; the range spans the top video's best segment for each query window."""
    queries, _ = query_segments(clip, window, stride)
    neighbours, _, _ = nearest_segments(db, model, matrix, queries)
    votes = segment_votes(matrix, neighbours)
    ranked = sorted(votes, key=lambda s: -votes[s])
    position = {int(i): n for n, i in enumerate(matrix.ids)}
    result: Ranked = []
    for source in ranked:
        spans = []
        for found in neighbours:
            mine = [(sim, sid) for sid, sim in found if int(matrix.sources[position[sid]]) == source]
            if mine:
                spans.append(position[max(mine)[1]])
        result.append((source, (float(matrix.starts[spans].min()), float(matrix.ends[spans].max())) if spans else None))
    return result


def _metrics(ranked: Ranked, truth_source: int, truth_range: tuple[float, float]) -> tuple[float, float, float]:
    sources = [source for source, _ in ranked]
    if truth_source not in sources:
        return 0.0, 0.0, 0.0
    rank = sources.index(truth_source) + 1
    top_range = ranked[0][1]
    tiou = temporal_iou(top_range, truth_range) if rank == 1 and top_range is not None else 0.0
    return float(rank == 1), 1.0 / rank, tiou


def run_videocopy(db: Database, paths: Sequence[Path], options: VideoCopyOptions = VideoCopyOptions(),
                  observer: IngestObserver | None = None, progress: Progress | None = None) -> VideoCopyReport:
    started = time.perf_counter()
    unknown = [name for name in options.transformations if name not in TRANSFORMATIONS]
    if unknown:
        raise InputError(f"unknown transformation {unknown[0]!r}: expected some of {', '.join(TRANSFORMATIONS)}")
    videos = sorted({path.resolve() for path in discover([Path(p).expanduser() for p in paths]).videos})
    if len(videos) < 2:
        raise InputError(f"eval videocopy needs at least 2 videos, found {len(videos)} in the given paths")
    summary = run_ingest(db, videos, IngestOptions(model=options.model, device=options.device, workers=options.workers,
                                                   keyframes=KeyframeOptions(method="fps", fps=options.fps)), observer)
    model = find_model(db, summary.model)
    if model is None:
        raise InputError("no video could be ingested")
    segments = build_segments(db, model, window=options.window, stride=options.stride)
    with db.transaction() as conn:
        source_of_uri = {str(uri): int(i) for uri, i in conn.execute(sa.text(
            "SELECT uri, id FROM sources WHERE uri = ANY(:u)"), {"u": [str(v) for v in videos]}).all()}
        frame_rows = conn.execute(sa.text(
            "SELECT f.id, f.source_id, f.pts_seconds FROM frames f JOIN embeddings e ON e.frame_id = f.id "
            "WHERE e.model_id = :m"), {"m": model.id}).all()
    frame_source = {int(r[0]): int(r[1]) for r in frame_rows}
    frame_time = {int(r[0]): float(r[2]) for r in frame_rows}
    frame_ids, frame_vectors = model_vectors(db, model.id, model.dim)
    matrix = load_segments(db, model, options.window)
    scores: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    timings: dict[str, list[float]] = {method: [] for method in METHODS}
    with tempfile.TemporaryDirectory(prefix="sisyphus-videocopy-") as scratch:
        total = len(videos) * len(options.transformations)
        tick = (lambda n: progress("videocopy: copies", n, total)) if progress is not None else None
        truths: list[CopyTruth] = make_copies(videos, Path(scratch), options.transformations, seed=options.seed,
                                              min_excerpt=max(3.0, options.window), max_excerpt=6.0, progress=tick)
        for truth in truths:
            source = source_of_uri.get(truth.source_uri)
            if source is None:
                continue
            clip = clip_from_video(truth.path, model, fps=options.fps, device=options.device)
            clock = time.perf_counter()
            ranked_frames = rank_by_frames(clip, frame_ids, frame_vectors, frame_source, frame_time)
            timings["frames"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            ranked_segments = rank_by_segments(db, model, matrix, clip, options.window, segments.stride)
            timings["segments"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            outcome = search_video(db, model, clip, k=min(10, len(source_of_uri)), window=options.window, save=False)
            timings["segments+align"].append(time.perf_counter() - clock)
            ranked_aligned: Ranked = [(hit.source_id, (hit.match_start, hit.match_end)) for hit in outcome.hits]
            for method, ranked in zip(METHODS, (ranked_frames, ranked_segments, ranked_aligned), strict=True):
                scores.setdefault((method, truth.transformation), []).append(
                    _metrics(ranked, source, truth.match_range))
            if progress is not None:
                progress("videocopy: queries", 1, len(truths))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    rows: list[MetricRow] = []
    for method in METHODS:
        per: dict[str, dict[str, Any]] = {}
        everything: list[tuple[float, float, float]] = []
        for name in options.transformations:
            values = scores.get((method, name), [])
            everything.extend(values)
            per[name] = _summary(values)
        per["overall"] = _summary(everything)
        results[method] = per
        for subset, figures in per.items():
            rows.extend(MetricRow(method, None, subset, metric, value) for metric, value in figures.items()
                        if metric != "queries" and value is not None)
    query_ms = {method: 1000.0 * float(np.mean(values)) if values else 0.0 for method, values in timings.items()}
    params = {"videos": [str(v) for v in videos], "model": model.name, "fps": options.fps, "window": options.window,
              "stride": segments.stride, "transformations": list(options.transformations), "seed": options.seed,
              "query_ms": query_ms}
    run_id = save_eval_run(db, "videocopy", params, rows)
    queries = sum(len(v) for (m, _), v in scores.items() if m == METHODS[0])
    return VideoCopyReport(run_id, len(videos), queries, model.name, results, time.perf_counter() - started, query_ms)


def _summary(values: list[tuple[float, float, float]]) -> dict[str, Any]:
    if not values:
        return {"r@1": None, "map": None, "tiou": None, "queries": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"r@1": float(array[:, 0].mean()), "map": float(array[:, 1].mean()), "tiou": float(array[:, 2].mean()),
            "queries": len(values)}
