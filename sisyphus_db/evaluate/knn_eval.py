"""Leave-one-out k-NN class accuracy on a labelled folder tree (the VideoSimilarity test).

The class of an image is the name of the top-level folder it sits in under the tree's
root. Every image is a query; its k nearest other images vote for its class. A model
whose embedding groups the classes well scores high; comparing backends shows what the
approximate indexes cost on top.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sisyphus_db.db.database import Database
from sisyphus_db.embed.embedder import load_embedder
from sisyphus_db.embed.models import DEFAULT_MODEL
from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.metrics import knn_accuracy
from sisyphus_db.evaluate.records import MetricRow, save_eval_run
from sisyphus_db.evaluate.retrieval import BackendSpec, Progress, drop_self, frames_by_path, make_searcher
from sisyphus_db.ingest.pipeline import IngestObserver, IngestOptions, run_ingest
from sisyphus_db.media.discover import discover
from sisyphus_db.store.registry import find_model
from sisyphus_db.store.vectors import vectors_by_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnnEvalOptions:
    k: int = 5
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    backends: tuple[BackendSpec, ...] = (BackendSpec("exact"),)
    device: str = "auto"
    workers: int | None = None


@dataclass
class KnnEvalReport:
    run_id: int
    k: int
    images: int
    classes: dict[str, int]
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": "knn", "k": self.k, "images": self.images, "classes": self.classes,
                "seconds": round(self.seconds, 3), "results": self.results}


def labelled_images(root: Path) -> list[tuple[Path, str]]:
    """(image, class) for every image under a class folder of `root`, in a stable order."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise InputError(f"{root}: expected a folder with one subfolder per class")
    base = base.resolve()
    found = discover([base])
    pairs: list[tuple[Path, str]] = []
    for group in found.image_groups:
        for image in group.images:
            parts = image.relative_to(base).parts
            if len(parts) >= 2:  # images directly in the root have no class and are left out
                pairs.append((image, parts[0]))
    classes = {label for _, label in pairs}
    if len(classes) < 2:
        raise InputError(f"{root}: expected at least 2 class folders with images, found {len(classes)}")
    return pairs


def run_knn_eval(db: Database, root: Path, options: KnnEvalOptions = KnnEvalOptions(),
                 observer: IngestObserver | None = None, progress: Progress | None = None) -> KnnEvalReport:
    """Ingest the tree with every model, then leave-one-out k-NN accuracy per model and backend."""
    started = time.perf_counter()
    if options.k < 1:
        raise InputError(f"--k must be at least 1, got {options.k}")
    if not options.models:
        raise InputError("--models is empty: give at least one model name")
    pairs = labelled_images(root)
    results: list[dict[str, Any]] = []
    rows: list[MetricRow] = []
    counts: dict[str, int] = {}
    for model_name in options.models:
        embedder = load_embedder(model_name, device=options.device)
        run_ingest(db, [Path(root).expanduser().resolve()],
                   IngestOptions(model=model_name, device=options.device, workers=options.workers), observer,
                   embedder=embedder)
        model = find_model(db, embedder.spec.name)
        stored = frames_by_path(db, model, [str(path) for path, _ in pairs]) if model is not None else {}
        usable = [(stored[str(path)][0], label) for path, label in pairs if str(path) in stored]
        if model is None or len(usable) <= options.k:
            raise InputError(f"{root}: {len(usable)} images were ingested; k-NN with k={options.k} needs more")
        label_of = dict(usable)
        ids, vectors = vectors_by_id(db, model.id, model.dim, [frame for frame, _ in usable])
        labels = [label_of[int(i)] for i in ids]
        counts = {label: labels.count(label) for label in sorted(set(labels))}
        position = {int(frame): index for index, frame in enumerate(ids)}
        sources = sorted({source for _, source in stored.values()})
        for spec in options.backends:
            searcher = make_searcher(spec, db, model, ids, vectors, sources, progress)
            found, distances = searcher.search(vectors, options.k + 1)
            neighbours, _ = drop_self(found, distances, ids, options.k)
            lists = [[position[int(i)] for i in row if i >= 0 and int(i) in position] for row in neighbours]
            accuracy = knn_accuracy(labels, lists, options.k)
            results.append({"model": model.name, "backend": searcher.backend, "factory": searcher.factory,
                            "params": searcher.params, "accuracy": accuracy.overall,
                            "per_class": accuracy.per_class})
            # eval_metrics has no model column: the subset names the model ("MODEL/overall").
            rows.append(MetricRow(searcher.backend, searcher.factory, f"{model.name}/overall", "accuracy",
                                  accuracy.overall))
            rows.extend(MetricRow(searcher.backend, searcher.factory, f"{model.name}/class={label}", "accuracy",
                                  value) for label, value in accuracy.per_class.items())
    params = {"root": str(Path(root).expanduser().resolve()), "k": options.k, "models": list(options.models),
              "backends": [{"backend": s.backend, "factory": s.factory} for s in options.backends]}
    run_id = save_eval_run(db, "knn", params, rows)
    return KnnEvalReport(run_id, options.k, len(pairs), counts, results, time.perf_counter() - started)
