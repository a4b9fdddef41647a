"""`eval discover`: the simulated reviewer on a labelled folder tree (class = top-level folder).

The tree is ingested into the current database (as `eval knn` does). For each class, the
reviewer starts from one positive (the class's first image by path) and runs discover
rounds of k with each method, counting the frames reviewed to reach 50 %, 80 % and all of
the class, next to one query's ranking and the random-order expectation. The other
frames of the database are left out with a source filter, so the figures are the tree's.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.embed.embedder import load_embedder
from sisyphus_db.embed.models import DEFAULT_MODEL
from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.knn_eval import labelled_images
from sisyphus_db.evaluate.records import MetricRow, save_eval_run
from sisyphus_db.evaluate.retrieval import frames_by_path
from sisyphus_db.ingest.pipeline import IngestObserver, IngestOptions, run_ingest
from sisyphus_db.label.discover import DISCOVER_METHODS, check_discover_options
from sisyphus_db.label.reviewer import REVIEW_FRACTIONS, fraction_key, simulate_review, single_query
from sisyphus_db.search.engine import MAX_K, SearchRequest, search
from sisyphus_db.search.queries import query_from_frame
from sisyphus_db.store.registry import StoredModel, find_model

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class DiscoverEvalOptions:
    label: str | None = None
    rounds: int | None = 30
    k: int = 10
    methods: tuple[str, ...] = DISCOVER_METHODS
    model: str = DEFAULT_MODEL
    device: str = "auto"
    workers: int | None = None

    def check(self) -> None:
        if not self.methods:
            raise InputError("--methods is empty: give at least one of " + ", ".join(DISCOVER_METHODS))
        for method in self.methods:
            check_discover_options(k=self.k, per_source=None, method=method)
        if self.k > 1000:
            raise InputError(f"--k must be between 1 and 1000 for a review, got {self.k}")
        if self.rounds is not None and self.rounds < 1:
            raise InputError(f"--rounds must be at least 1, got {self.rounds}")


@dataclass
class DiscoverEvalReport:
    run_id: int
    model: str
    k: int
    rounds: int | None
    images: int
    classes: dict[str, int]
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": "discover", "model": self.model, "k": self.k, "rounds": self.rounds,
                "images": self.images, "classes": self.classes, "seconds": round(self.seconds, 3),
                "results": self.results}


def run_discover_eval(db: Database, root: Path, options: DiscoverEvalOptions = DiscoverEvalOptions(),
                      observer: IngestObserver | None = None) -> DiscoverEvalReport:
    """Ingest the tree, then simulate a reviewer per class and method; figures go to eval_runs/eval_metrics."""
    started = time.perf_counter()
    options.check()
    pairs = labelled_images(root)
    names = sorted({label for _, label in pairs})
    if options.label is not None and options.label not in names:
        raise InputError(f"{root}: no class folder named {options.label!r} (classes: {', '.join(names)})")
    embedder = load_embedder(options.model, device=options.device)
    base = Path(root).expanduser().resolve()
    run_ingest(db, [base], IngestOptions(model=options.model, device=options.device, workers=options.workers),
               observer, embedder=embedder)
    model = find_model(db, embedder.spec.name)
    stored = frames_by_path(db, model, [str(path) for path, _ in pairs]) if model is not None else {}
    usable = sorted((str(path), stored[str(path)][0], label) for path, label in pairs if str(path) in stored)
    if model is None or len(usable) < 3:
        raise InputError(f"{root}: {len(usable)} images were ingested; a review needs at least 3")
    _refresh_faiss_index(db, model)
    sources = sorted({stored[path][1] for path, _, _ in usable})
    where = f"frames.source_id IN ({', '.join(str(int(s)) for s in sources)})"
    candidates = len(usable) - 1
    counts = {name: sum(1 for _, _, label in usable if label == name) for name in names}
    results: list[dict[str, Any]] = []
    rows: list[MetricRow] = []
    for name in [options.label] if options.label else names:
        members = [frame_id for _, frame_id, label in usable if label == name]
        if len(members) < 2:
            logger.warning("class %s has %d image(s): nothing to find from one, left out", name, len(members))
            continue
        start = members[0]
        ranking = search(db, model, query_from_frame(db, start, model),
                         SearchRequest(k=min(len(usable), MAX_K), backend="exact", where=where, save=False))
        single = single_query([hit.frame_id for hit in ranking.hits if hit.frame_id != start],
                              set(members) - {start})
        for method in options.methods:
            result = simulate_review(db, model, members, start, candidates=candidates, method=method, k=options.k,
                                     max_rounds=options.rounds, where=where, single=single)
            results.append({"class": name, "start": start, **result.to_json()})
            subset = f"{model.name}/class={name}"
            rows.extend(_metric_rows(method, subset, result.reached, result.random, single))
    if not results:
        raise InputError(f"{root}: every class has a single image; a review needs at least 2 per class")
    for method in options.methods:
        mine = [r for r in results if r["method"] == method]
        for fraction in REVIEW_FRACTIONS:
            key = fraction_key(fraction)
            reached = [r["reached"][key] for r in mine]
            if all(value is not None for value in reached):
                rows.append(MetricRow(method, None, f"{model.name}/mean", f"reviewed@{key}",
                                      statistics.fmean(reached)))
            rows.append(MetricRow(method, None, f"{model.name}/mean", f"random@{key}",
                                  statistics.fmean(r["random"][key] for r in mine)))
    params = {"root": str(base), "k": options.k, "rounds": options.rounds, "model": model.name,
              "methods": list(options.methods), "label": options.label}
    run_id = save_eval_run(db, "discover", params, rows)
    return DiscoverEvalReport(run_id, model.name, options.k, options.rounds, len(usable), counts, results,
                              time.perf_counter() - started)


def _metric_rows(method: str, subset: str, reached: dict[str, int | None], random: dict[str, float],
                 single: dict[str, int | None]) -> list[MetricRow]:
    rows = []
    for key, value in reached.items():
        if value is not None:
            rows.append(MetricRow(method, None, subset, f"reviewed@{key}", float(value)))
        rows.append(MetricRow(method, None, subset, f"random@{key}", float(random[key])))
        if single.get(key) is not None:
            rows.append(MetricRow(method, None, subset, f"single@{key}", float(single[key] or 0)))
    return rows


def _refresh_faiss_index(db: Database, model: StoredModel) -> None:
    """An existing faiss index gets the tree's new frames, so discover searches them all."""
    from sisyphus_db.search.indexing import update_faiss_index
    from sisyphus_db.store.indexes import find_index

    record = find_index(db, model.id, "faiss")
    if record is None:
        return  # discover searches exactly
    with db.transaction() as conn:
        newest = int(conn.execute(sa.text("SELECT coalesce(max(frame_id), 0) FROM embeddings WHERE model_id = :m"),
                                  {"m": model.id}).scalar_one())
    if newest > record.watermark:
        update_faiss_index(db, model)
