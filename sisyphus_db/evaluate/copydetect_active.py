"""Copy detection on passive and on activated references: the Active Indexing comparison.

The protocol of `copydetect` runs twice with the same augmentation seeds and the same
distractors. Passive: the reference images as they are. Active: for each faiss factory,
the index is trained on the passive references' vectors (as the user's sidecar would
be); every reference is activated toward its quantized representation in that index;
the activated images are written (under SISYPHUS_HOME/activate-eval, resumable), ingested
like any images, added to a copy of the same trained index, and transformed into queries
with the same seeds. The exact backend's active block uses the images activated for the
first factory. Each block is stored as its own eval run; active rows name their backend
`<backend>+active`, so both live side by side in eval_metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sisyphus_db.activate.optimise import ActivationSettings
from sisyphus_db.activate.runner import Planned, activate_plan
from sisyphus_db.activate.target import quantized_targets
from sisyphus_db.db.database import Database
from sisyphus_db.embed.embedder import Embedder, load_embedder
from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.copydetect import (
    OVERALL,
    UAP_PREDICTIONS,
    CopyDetectOptions,
    CopyDetectReport,
    _ingest_json,
    _label,
    _make_queries,
    _reference_paths,
    _search_all,
    score,
)
from sisyphus_db.evaluate.records import MetricRow, save_eval_run
from sisyphus_db.evaluate.retrieval import (
    ExactSearcher,
    FaissSearcher,
    Progress,
    frames_by_path,
)
from sisyphus_db.ingest.pipeline import IngestObserver, IngestOptions, run_ingest
from sisyphus_db.store.registry import StoredModel, find_model
from sisyphus_db.store.vectors import vectors_by_id

logger = logging.getLogger(__name__)

ACTIVE_SUFFIX = "+active"


@dataclass
class ActiveCopyDetectReport:
    passive: CopyDetectReport
    active: CopyDetectReport
    activation: dict[str, dict[str, Any]] = field(default_factory=dict)  # per factory
    rerank: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"kind": "copydetect_active", "rerank": self.rerank, "passive": self.passive.to_json(),
                "active": self.active.to_json(), "activation": self.activation}


@dataclass(frozen=True)
class _Stored:
    paths: list[Path]
    ids: np.ndarray
    vectors: np.ndarray
    sources: list[int]


def _ingest(db: Database, images: Sequence[Path], embedder: Embedder, options: CopyDetectOptions,
            observer: IngestObserver | None) -> tuple[_Stored, dict[str, Any], StoredModel]:
    summary = run_ingest(db, list(images), IngestOptions(model=options.model, device=options.device,
                                                         workers=options.workers), observer, embedder=embedder)
    model = find_model(db, embedder.spec.name)
    stored = frames_by_path(db, model, [str(path) for path in images]) if model is not None else {}
    kept = [path for path in images if str(path) in stored]
    if not kept or model is None:
        raise InputError("none of the reference images could be ingested: see the ingest_errors table")
    frame_ids = np.array([stored[str(path)][0] for path in kept], dtype=np.int64)
    ids, vectors = vectors_by_id(db, model.id, model.dim, frame_ids)
    order = {int(i): row for row, i in enumerate(ids)}
    vectors = vectors[[order[int(i)] for i in frame_ids]]
    sources = sorted({stored[str(path)][1] for path in kept})
    return _Stored(kept, frame_ids, vectors, sources), _ingest_json(summary), model


def _work_dir(db: Database, images: Sequence[Path], model: str, factory: str, settings: ActivationSettings) -> Path:
    """One folder per (references, model, factory, settings): a rerun resumes instead of starting over."""
    key = json.dumps({"images": [str(p) for p in images], "model": model, "factory": factory,
                      "psnr": settings.psnr, "iterations": settings.iterations, "lr": settings.lr}, sort_keys=True)
    return db.settings.home / "activate-eval" / hashlib.sha256(key.encode()).hexdigest()[:16]


def _activate(db: Database, passive: _Stored, searcher: FaissSearcher, embedder: Embedder,
              settings: ActivationSettings, progress: Progress | None) -> tuple[list[Path], dict[str, Any]]:
    folder = _work_dir(db, passive.paths, embedder.spec.name, str(searcher.factory), settings)
    # Numbered names: references from different folders may share a file name.
    plan = [Planned(path, folder / f"{number:06d}_{path.name}") for number, path in enumerate(passive.paths)]
    quantized_targets(searcher.index, passive.vectors[:1])  # refuse a non-quantizing index before any work
    info = {"kind": "trained_for_purpose", "factory": searcher.factory, "trained_on": int(passive.ids.size),
            "note": "the evaluation's index, trained on the passive references"}
    report = activate_plan(plan, embedder, searcher.index, info, settings, progress=progress, out=folder)
    if report.errors:
        raise InputError(f"activation failed for {len(report.errors)} references: {report.errors[0]['error']}")
    manifests = [json.loads((item.output.parent / (item.output.name + ".activation.json")).read_text())
                 for item in plan]
    psnrs = [m["psnr"] for m in manifests if m["psnr"] is not None]  # None: written unchanged
    summary = {"folder": str(folder), "images": len(manifests), "unchanged": len(manifests) - len(psnrs),
               "mean_psnr": float(np.mean(psnrs)) if psnrs else None,
               "min_psnr": float(np.min(psnrs)) if psnrs else None,
               "mean_ssim": float(np.mean([m["ssim"] for m in manifests])),
               "mean_distance_to_target_before": float(np.mean([m["distance_to_target_before"] for m in manifests])),
               "mean_distance_to_target_after": float(np.mean([m["distance_to_target_after"] for m in manifests])),
               "seconds_per_image": float(np.mean([m["seconds"] for m in manifests])),
               "activated_now": len(report.items), "reused": len(report.skipped),
               "psnr_target": settings.psnr, "iterations": settings.iterations, "lr": settings.lr}
    return [item.output for item in plan], summary


def run_copydetect_active(db: Database, paths: Sequence[Path | str], options: CopyDetectOptions,
                          settings: ActivationSettings, observer: IngestObserver | None = None,
                          progress: Progress | None = None) -> ActiveCopyDetectReport:
    """Passive and active copy detection with the same queries' recipe; both stored in eval_runs."""
    started = time.perf_counter()
    settings.check()
    factories = [spec.factory or "auto" for spec in options.backends if spec.backend == "faiss"]
    if not factories:
        raise InputError("--activate needs the faiss backend: activation targets a faiss index's quantizer")
    if any(spec.backend == "pgvector" for spec in options.backends):
        raise InputError("--activate compares exact and faiss backends: leave pgvector out of --backends")
    images = _reference_paths(paths, options.max_references)
    embedder = load_embedder(options.model, device=options.device)
    passive, passive_ingest, model = _ingest(db, images, embedder, options, observer)
    passive_queries = _make_queries(passive.paths, passive.ids, embedder, options, progress)

    blocks: dict[str, list[dict[str, Any]]] = {"passive": [], "active": []}
    rows: dict[str, list[MetricRow]] = {"passive": [], "active": []}
    activation: dict[str, dict[str, Any]] = {}
    active_ingest: dict[str, Any] = {}
    first_active: tuple[_Stored, Any] | None = None
    active_references = 0
    active_queries = None
    for factory in dict.fromkeys(factories):
        searcher = FaissSearcher(passive.ids, passive.vectors, factory, progress, rerank=options.rerank)
        _score_into(searcher, passive_queries, "", blocks["passive"], rows["passive"], progress)
        activated, summary = _activate(db, passive, searcher, embedder, settings, progress)
        active, active_ingest, _ = _ingest(db, activated, embedder, options, observer)
        active_queries = _make_queries(active.paths, active.ids, embedder, options, progress)
        like = FaissSearcher(active.ids, active.vectors, factory, progress, rerank=options.rerank, like=searcher)
        _score_into(like, active_queries, ACTIVE_SUFFIX, blocks["active"], rows["active"], progress)
        activation[str(searcher.factory)] = summary
        rows["active"].extend(MetricRow("faiss" + ACTIVE_SUFFIX, searcher.factory, "activation", metric,
                                        summary[key]) for metric, key in
                              (("psnr", "mean_psnr"), ("ssim", "mean_ssim"), ("seconds_per_image",
                                                                              "seconds_per_image"))
                              if summary[key] is not None)
        active_references = len(active.paths)
        if first_active is None:
            first_active = (active, active_queries)
    if any(spec.backend == "exact" for spec in options.backends):
        assert first_active is not None
        _score_into(ExactSearcher(passive.ids, passive.vectors), passive_queries, "", blocks["passive"],
                    rows["passive"], progress, first=True)
        stored, queries = first_active
        _score_into(ExactSearcher(stored.ids, stored.vectors), queries, ACTIVE_SUFFIX, blocks["active"],
                    rows["active"], progress, first=True)

    n_distractors = sum(reference is None for reference in passive_queries.references)
    common = {"model": model.name, "distractors": n_distractors, "combinations": options.combinations,
              "seed": options.seed, "uap_predictions": UAP_PREDICTIONS, "rerank": options.rerank,
              "backends": [{"backend": s.backend, "factory": s.factory} for s in options.backends],
              "paths": [str(Path(p).resolve()) for p in paths]}
    passive_id = save_eval_run(db, "copydetect", {**common, "activate": "passive", "references": len(passive.paths)},
                               rows["passive"])
    active_id = save_eval_run(db, "copydetect", {**common, "activate": "active", "passive_run_id": passive_id,
                                                 "references": active_references, "activation": activation},
                              rows["active"])
    seconds = time.perf_counter() - started
    n_queries = len(passive_queries.references) - n_distractors
    assert active_queries is not None
    return ActiveCopyDetectReport(
        CopyDetectReport(passive_id, model.name, len(passive.paths), n_queries, n_distractors, blocks["passive"],
                         passive_ingest, seconds),
        CopyDetectReport(active_id, model.name, active_references,
                         len(active_queries.references) - n_distractors, n_distractors, blocks["active"],
                         active_ingest, seconds),
        activation, options.rerank)


def _score_into(searcher: Any, queries: Any, suffix: str, results: list[dict[str, Any]], rows: list[MetricRow],
                progress: Progress | None, first: bool = False) -> None:
    label = _label(searcher.backend + suffix, searcher.factory)
    if progress is not None:
        progress(f"search {label}", 0, len(queries.references))
    found, distances = _search_all(searcher, queries.vectors, progress, label)
    figures = score(found, distances, queries.transformations, queries.references)
    result = {"backend": searcher.backend, "factory": searcher.factory, "requested": searcher.requested,
              "params": searcher.params, **figures}
    # The exact backend first, as `copydetect` lists it.
    results.insert(0, result) if first else results.append(result)
    for subset, values in [(OVERALL, figures[OVERALL]), *figures["per_transformation"].items()]:
        rows.extend(MetricRow(searcher.backend + suffix, searcher.factory, subset, metric, value)
                    for metric, value in values.items() if metric != "queries")
