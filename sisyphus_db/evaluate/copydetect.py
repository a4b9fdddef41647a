"""Copy-detection evaluation, the Active Indexing protocol, on the user's own images.

The reference images are ingested (they are the database). Every reference image is
transformed with each of `AUGMENTATIONS` (random combinations with several seeds), and
the results are queries: embedded in memory with the same model, never ingested. Each
backend answers every query; per transformation we report r@1, r@10, r@100 and MRR of
the query's own reference, and µAP of copy detection, for which distractor queries
(generated pictures that are in no reference) compete with the true copies: a method
must rank true matches above everything a distractor brings back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import numpy as np
from PIL import Image

from sisyphus_db.db.database import Database
from sisyphus_db.embed.embedder import Embedder, load_embedder
from sisyphus_db.embed.models import DEFAULT_MODEL
from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.augment import AUGMENTATIONS, apply
from sisyphus_db.evaluate.metrics import (
    mean_reciprocal_rank,
    micro_average_precision,
    recall_at_k,
    score_from_distance,
)
from sisyphus_db.evaluate.records import MetricRow, save_eval_run
from sisyphus_db.evaluate.retrieval import BackendSpec, Progress, frames_by_path, make_searcher
from sisyphus_db.ingest.pipeline import IngestObserver, IngestOptions, IngestSummary, run_ingest
from sisyphus_db.media.discover import discover
from sisyphus_db.media.images import load_image
from sisyphus_db.store.registry import find_model
from sisyphus_db.store.vectors import vectors_by_id

logger = logging.getLogger(__name__)

RECALL_KS = (1, 10, 100)
SEARCH_DEPTH = max(RECALL_KS)
UAP_PREDICTIONS = 10  # predictions per query that enter µAP (DISC21 allows several per query)
COMBINED = "random_combination"
OVERALL = "overall"


@dataclass(frozen=True)
class CopyDetectOptions:
    model: str = DEFAULT_MODEL
    device: str = "auto"
    backends: tuple[BackendSpec, ...] = (BackendSpec("exact"),)
    distractors: int = 20
    combinations: int = 2  # random combinations per reference, each with its own seed
    max_references: int | None = None
    seed: int = 0
    workers: int | None = None
    rerank: bool = True  # False: faiss results in the index's own (quantized) order, the paper's setting


@dataclass(frozen=True)
class _QuerySet:
    vectors: np.ndarray
    transformations: list[str]  # per query; "distractor" for distractors
    references: list[int | None]  # the query's reference frame id, None for distractors


@dataclass
class CopyDetectReport:
    run_id: int
    model: str
    references: int
    queries: int
    distractors: int
    results: list[dict[str, Any]] = field(default_factory=list)
    ingest: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": "copydetect", "model": self.model, "references": self.references,
                "queries": self.queries, "distractors": self.distractors, "seconds": round(self.seconds, 3),
                "ingest": self.ingest, "results": self.results}


def run_copydetect(db: Database, paths: Sequence[Path | str], options: CopyDetectOptions = CopyDetectOptions(),
                   observer: IngestObserver | None = None, progress: Progress | None = None) -> CopyDetectReport:
    """Ingest the references, build augmented and distractor queries, search every backend, store the figures."""
    started = time.perf_counter()
    if options.distractors < 0:
        raise InputError(f"--distractors must be at least 0, got {options.distractors}")
    if options.combinations < 1:
        raise InputError(f"--combinations must be at least 1, got {options.combinations}")
    images = _reference_paths(paths, options.max_references)
    embedder = load_embedder(options.model, device=options.device)
    summary = run_ingest(db, images, IngestOptions(model=options.model, device=options.device,
                                                   workers=options.workers), observer, embedder=embedder)
    model = find_model(db, embedder.spec.name)
    stored = frames_by_path(db, model, [str(path) for path in images]) if model is not None else {}
    images = [path for path in images if str(path) in stored]  # broken files are in the ingest summary
    if not images or model is None:
        raise InputError("none of the reference images could be ingested: see `sisyphus db status` and "
                         "the ingest_errors table")
    frame_ids = np.array([stored[str(path)][0] for path in images], dtype=np.int64)
    ids, vectors = vectors_by_id(db, model.id, model.dim, frame_ids)
    queries = _make_queries(images, frame_ids, embedder, options, progress)

    rows: list[MetricRow] = []
    results: list[dict[str, Any]] = []
    sources = sorted({source for _, source in stored.values()})
    for spec in options.backends:
        searcher = make_searcher(spec, db, model, ids, vectors, sources, progress, rerank=options.rerank)
        if progress is not None:
            progress(f"search {_label(searcher.backend, searcher.factory)}", 0, len(queries.references))
        found, distances = _search_all(searcher, queries.vectors, progress, _label(searcher.backend, searcher.factory))
        figures = score(found, distances, queries.transformations, queries.references)
        results.append({"backend": searcher.backend, "factory": searcher.factory, "requested": searcher.requested,
                        "params": searcher.params, **figures})
        for subset, values in [(OVERALL, figures[OVERALL]), *figures["per_transformation"].items()]:
            rows.extend(MetricRow(searcher.backend, searcher.factory, subset, metric, value)
                        for metric, value in values.items() if metric != "queries")
    n_distractors = sum(reference is None for reference in queries.references)
    params = {"model": model.name, "references": len(images), "distractors": n_distractors,
              "combinations": options.combinations, "seed": options.seed, "uap_predictions": UAP_PREDICTIONS,
              "rerank": options.rerank,
              "backends": [{"backend": s.backend, "factory": s.factory} for s in options.backends],
              "paths": [str(Path(p).resolve()) for p in paths]}
    run_id = save_eval_run(db, "copydetect", params, rows)
    return CopyDetectReport(run_id, model.name, len(images), len(queries.references) - n_distractors, n_distractors,
                            results, _ingest_json(summary), time.perf_counter() - started)


def _label(backend: str, factory: str | None) -> str:
    return f"{backend} {factory}" if factory else backend


def _ingest_json(summary: IngestSummary) -> dict[str, Any]:
    data = summary.to_json()
    return {key: data[key] for key in ("frames", "skipped", "errors", "seconds")}


def _reference_paths(paths: Sequence[Path | str], limit: int | None) -> list[Path]:
    found = discover(paths)
    if found.errors:
        first = found.errors[0]
        raise InputError(f"{first.path}: {first.reason}")
    images = [image for group in found.image_groups for image in group.images]
    if not images:
        raise InputError("no reference images found in the given paths (videos are not used as references)")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--max-references must be at least 1, got {limit}")
        images = images[:limit]
    return images


def _make_queries(images: Sequence[Path], frame_ids: np.ndarray, embedder: Embedder, options: CopyDetectOptions,
                  progress: Progress | None) -> _QuerySet:
    singles = [name for name in AUGMENTATIONS if name != COMBINED]
    vectors: list[np.ndarray] = []
    transformations: list[str] = []
    references: list[int | None] = []
    if progress is not None:
        progress("embed queries", 0, len(images) + options.distractors)
    for number, (path, frame_id) in enumerate(zip(images, frame_ids, strict=True)):
        original = Image.fromarray(load_image(path).rgb)
        batch: list[np.ndarray] = []
        for name in singles:
            batch.append(np.asarray(apply(name, original, seed=options.seed + number)))
            transformations.append(name)
        for combination in range(options.combinations):
            seed = options.seed + 1000 * (combination + 1) + number
            batch.append(np.asarray(apply(COMBINED, original, seed=seed)))
            transformations.append(COMBINED)
        references.extend([int(frame_id)] * len(batch))
        vectors.append(embedder.embed_images(batch))
        if progress is not None:
            progress("embed queries", 1, None)
    if options.distractors:
        vectors.append(embedder.embed_images(distractor_images(options.distractors, options.seed)))
        transformations.extend(["distractor"] * options.distractors)
        references.extend([None] * options.distractors)
        if progress is not None:
            progress("embed queries", options.distractors, None)
    return _QuerySet(np.concatenate(vectors).astype(np.float32), transformations, references)


def distractor_images(count: int, seed: int, size: tuple[int, int] = (256, 192)) -> list[np.ndarray]:
    """Generated pictures in no reference set, each passed through a random transformation.

    Transforming them too keeps them from standing out by their cleanness alone.
    """
    from sisyphus_db.media.synthetic import Segment, segment_frame

    rng = Random(seed)
    names = list(AUGMENTATIONS)
    images: list[np.ndarray] = []
    for number in range(count):
        # Seeds far from the ones tests use for reference pictures.
        picture = segment_frame(Segment("blobs", 1.0, seed=900_000 + seed * 1000 + number), 0, size)
        transformed = apply(rng.choice(names), Image.fromarray(picture), seed=seed + number)
        images.append(np.asarray(transformed))
    return images


def _search_all(searcher: Any, queries: np.ndarray, progress: Progress | None, label: str,
                chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    found_parts, distance_parts = [], []
    for start in range(0, queries.shape[0], chunk):
        found, distances = searcher.search(queries[start:start + chunk], SEARCH_DEPTH)
        found_parts.append(found)
        distance_parts.append(distances)
        if progress is not None:
            progress(f"search {label}", found.shape[0], None)
    return np.concatenate(found_parts), np.concatenate(distance_parts)


def score(found: np.ndarray, distances: np.ndarray, transformations: Sequence[str],
          references: Sequence[int | None]) -> dict[str, Any]:
    """r@1/10/100, MRR and µAP overall and per transformation (distractors join every µAP)."""
    distractor_rows = [row for row, reference in enumerate(references) if reference is None]
    names = list(dict.fromkeys(t for t, r in zip(transformations, references, strict=True) if r is not None))

    def figures(rows: list[int]) -> dict[str, float]:
        ranked = [[int(i) for i in found[row] if i >= 0] for row in rows]
        relevant = [int(references[row]) for row in rows]  # type: ignore[arg-type]
        values: dict[str, float] = {f"r@{k}": recall_at_k(ranked, relevant, k) for k in RECALL_KS}
        values["mrr"] = mean_reciprocal_rank(ranked, relevant)
        truth = {row: references[row] for row in rows}
        predictions = [
            (row, int(found[row, column]), score_from_distance(float(distances[row, column])))
            for row in [*rows, *distractor_rows] for column in range(min(UAP_PREDICTIONS, found.shape[1]))
            if found[row, column] >= 0
        ]
        values["uap"] = micro_average_precision(predictions, truth, len(rows))
        values["queries"] = len(rows)
        return values

    positive_rows = [row for row, reference in enumerate(references) if reference is not None]
    per = {name: figures([row for row in positive_rows if transformations[row] == name]) for name in names}
    return {OVERALL: figures(positive_rows), "per_transformation": per}
