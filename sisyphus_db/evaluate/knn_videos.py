"""Leave-one-out k-NN class accuracy of whole videos (`sisyphus eval knn PATH --videos`).

The class of a video is the top-level folder it sits in under PATH (as for images). The
videos are ingested (frames at `fps`), then each video gets one vector per descriptor:

- `frames`: the mean of its frame vectors under the model;
- `segments`: the mean of its segment vectors (`segments build`, window `window` s);
- `colour`: the mean of its frames' colour palettes (the `colour` model);
- `sound`: the mean of its per-second sound vectors (videos without audio are left out);
- `combination`: the four above, each L2-normalised, concatenated (videos that have all).

Every video is a query; its k nearest other videos (cosine) vote for its class, as in the
VideoSimilarity tables. Figures go to eval_runs (kind 'knn-videos') / eval_metrics
(backend = descriptor, subset = 'overall' or 'class=NAME', metric = 'accuracy').
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.embed.models import DEFAULT_MODEL
from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.metrics import knn_accuracy
from sisyphus_db.evaluate.records import MetricRow, save_eval_run
from sisyphus_db.ingest.messages import KeyframeOptions
from sisyphus_db.ingest.pipeline import IngestObserver, IngestOptions, run_ingest
from sisyphus_db.media.discover import discover
from sisyphus_db.store.registry import find_model

DESCRIPTORS = ("frames", "segments", "colour", "sound", "combination")
Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class KnnVideoOptions:
    k: int = 5
    model: str = DEFAULT_MODEL
    device: str = "auto"
    fps: float = 1.0
    window: float = 4.0
    workers: int | None = None


@dataclass
class KnnVideoReport:
    run_id: int
    k: int
    videos: int
    classes: dict[str, int]
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": "knn-videos", "k": self.k, "videos": self.videos,
                "classes": self.classes, "seconds": round(self.seconds, 3), "results": self.results}


def labelled_videos(root: Path) -> list[tuple[Path, str]]:
    base = Path(root).expanduser()
    if not base.is_dir():
        raise InputError(f"{root}: expected a folder with one subfolder of videos per class")
    base = base.resolve()
    pairs = [(video, video.relative_to(base).parts[0]) for video in sorted(discover([base]).videos)
             if len(video.relative_to(base).parts) >= 2]
    if len({label for _, label in pairs}) < 2:
        raise InputError(f"{root}: expected at least 2 class folders with videos, "
                         f"found {len({label for _, label in pairs})}")
    return pairs


def _unit(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _means(db: Database, sql: str, params: dict[str, Any], sources: list[int]) -> dict[int, npt.NDArray[np.float32]]:
    """Per source, the mean of the vectors a query returns as (source_id, vec)."""
    from pgvector import HalfVector

    with db.transaction() as conn:
        rows = conn.execute(sa.text(sql), {**params, "sources": sources}).all()
    grouped: dict[int, list[npt.NDArray[np.float32]]] = {}
    for source, vec in rows:
        value = HalfVector.from_text(vec) if isinstance(vec, str) else vec
        grouped.setdefault(int(source), []).append(np.asarray(value.to_numpy(), dtype=np.float32))
    return {source: np.mean(values, axis=0) for source, values in grouped.items()}


def run_knn_videos(db: Database, root: Path, options: KnnVideoOptions = KnnVideoOptions(),
                   observer: IngestObserver | None = None, progress: Progress | None = None) -> KnnVideoReport:
    from sisyphus_db.temporal.audio_store import build_audio
    from sisyphus_db.temporal.colour_build import build_colour
    from sisyphus_db.temporal.segments import build_segments

    started = time.perf_counter()
    if options.k < 1:
        raise InputError(f"--k must be at least 1, got {options.k}")
    pairs = labelled_videos(root)
    summary = run_ingest(db, [video for video, _ in pairs], IngestOptions(
        model=options.model, device=options.device, workers=options.workers,
        keyframes=KeyframeOptions(method="fps", fps=options.fps)), observer)
    model = find_model(db, summary.model)
    if model is None:
        raise InputError(f"{root}: no video could be ingested")
    build_segments(db, model, window=options.window, progress=progress)
    build_colour(db, device=options.device, progress=progress)
    audio = build_audio(db, progress=progress)  # VGGish when its weights are set, else the log-mel baseline
    colour = find_model(db, "colour")
    with db.transaction() as conn:
        source_of = {str(uri): int(i) for uri, i in conn.execute(sa.text(
            "SELECT uri, id FROM sources WHERE uri = ANY(:u)"), {"u": [str(v) for v, _ in pairs]}).all()}
    labelled = [(source_of[str(video)], label) for video, label in pairs if str(video) in source_of]
    sources = [source for source, _ in labelled]
    frame_sql = ("SELECT f.source_id, e.vec FROM embeddings e JOIN frames f ON f.id = e.frame_id "
                 "WHERE e.model_id = :m AND f.source_id = ANY(:sources)")
    descriptors: dict[str, dict[int, npt.NDArray[np.float32]]] = {
        "frames": _means(db, frame_sql, {"m": model.id}, sources),
        "segments": _means(db, "SELECT source_id, vec FROM segments WHERE model_id = :m AND window_seconds = :w "
                           "AND source_id = ANY(:sources)", {"m": model.id, "w": options.window}, sources),
        "colour": _means(db, frame_sql, {"m": colour.id}, sources) if colour is not None else {},
        "sound": _means(db, "SELECT source_id, vec FROM audio_segments WHERE method = :a AND source_id = ANY(:sources)",
                        {"a": audio.method}, sources),
    }
    parts = ("frames", "segments", "colour", "sound")
    descriptors["combination"] = {
        source: np.concatenate([_unit(descriptors[name][source][None, :])[0] for name in parts])
        for source in sources if all(source in descriptors[name] for name in parts)}
    label_of = dict(labelled)
    results: list[dict[str, Any]] = []
    rows: list[MetricRow] = []
    for name in DESCRIPTORS:
        have = [source for source in sources if source in descriptors[name]]
        if len(have) <= options.k:
            results.append({"descriptor": name, "videos": len(have), "accuracy": None, "per_class": {},
                            "note": f"{len(have)} videos have this descriptor; k={options.k} needs more"})
            continue
        vectors = _unit(np.stack([descriptors[name][source] for source in have]))
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :options.k]
        accuracy = knn_accuracy([label_of[s] for s in have], neighbours.tolist(), options.k)
        results.append({"descriptor": name, "videos": len(have), "accuracy": accuracy.overall,
                        "per_class": accuracy.per_class})
        rows.append(MetricRow(name, None, "overall", "accuracy", accuracy.overall))
        rows.extend(MetricRow(name, None, f"class={label}", "accuracy", value)
                    for label, value in accuracy.per_class.items())
    classes = {label: sum(1 for _, l in labelled if l == label) for label in sorted(set(label_of.values()))}
    params = {"root": str(Path(root).expanduser().resolve()), "k": options.k, "model": model.name,
              "fps": options.fps, "window": options.window}
    run_id = save_eval_run(db, "knn-videos", params, rows)
    return KnnVideoReport(run_id, options.k, len(labelled), classes, results, time.perf_counter() - started)
