"""`discover`: the next frames to review for a label, from its positives and negatives.

Every candidate comes from the search planner (`search/engine.py`: faiss when the model
has an index, exact search otherwise), so filters, the exact rerank and deleted frames
behave as in `sisyphus search`. A round costs a few ANN searches (at most MAX_QUERIES)
and a small model over their candidates, never a pass over every vector. Frames that
already carry the label, positive or negative, are never proposed: they are dropped and
the list is refilled to k from deeper in the rankings.

Methods (measured by the simulated reviewer, benchmarks/results/discover.md; the default
is the classifier):
- rocchio: one query, the positives' mean pushed away from the negatives' mean.
- multi: each positive (up to MAX_QUERIES, spread over its looks) is a query of its own;
  the rankings are merged by reciprocal-rank fusion, and a candidate nearer to a negative
  than to any positive goes to the back.
- classifier: SEALS (Coleman et al. 2022): a logistic regression trained on the positives
  against the negatives (and random frames as weak negatives while there are few), applied
  only to the ANN candidates of the positives.
- expand: Rocchio's query, expanded with its top results (average query expansion).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.label import feedback
from sisyphus_db.label.labels import LabelError, label_frame_ids, require_label
from sisyphus_db.search.engine import MAX_K, SearchRequest, search
from sisyphus_db.search.filters import Where, where_description
from sisyphus_db.search.queries import Query
from sisyphus_db.search.runs import SearchHit, save_run
from sisyphus_db.store.indexes import IndexRecord, find_index
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import vectors_by_id

DISCOVER_METHODS: tuple[str, ...] = ("rocchio", "multi", "classifier", "expand")
# Chosen by the simulated reviewer (benchmarks/results/discover.md): over two demo drives and
# four rare classes of a labelled tree, 6-7 starts each, the methods are close up to 80 % of a
# class and the classifier finds the last frames soonest (means to 50 / 80 / 100 %: classifier
# 13.1 / 19.4 / 29.3, expand 13.2 / 19.0 / 35.2, rocchio 13.6 / 20.0 / 35.2, multi 13.2 / 19.8 /
# 71.9: one look per query finds the bulk fast but not the odd last frames).
DEFAULT_METHOD = "classifier"
MAX_QUERIES = 8          # ANN searches per round, however many positives a label has
POOL_PER_QUERY = 50      # classifier: candidates taken around each positive
MIN_NEGATIVES = 5        # classifier: below this, random frames stand in as weak negatives
WEAK_NEGATIVES = 50
FIRST_DEPTH_MAX = 1_000  # the first pass digs at most this deep; a shortfall digs 4x deeper

Candidate = tuple[int, float, float | None]  # frame id, distance to the query or nearest positive, score


@dataclass
class DiscoverOutcome:
    label: str
    run_id: int | None
    method: str
    hits: list[SearchHit]
    scores: list[float | None]
    backend: str
    params: dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "run_id": self.run_id, "method": self.method,
                "results": [{**hit.to_json(), "score": None if score is None else round(score, 6)}
                            for hit, score in zip(self.hits, self.scores, strict=True)]}


def check_discover_options(*, k: int, per_source: int | None, method: str | None) -> str:
    chosen = DEFAULT_METHOD if method is None else method
    if chosen not in DISCOVER_METHODS:
        raise InputError(f"unknown method {chosen!r}: expected one of {', '.join(DISCOVER_METHODS)}")
    if not 1 <= k <= MAX_K:
        raise InputError(f"--k must be between 1 and {MAX_K}, got {k}")
    if per_source is not None and per_source < 1:
        raise InputError(f"--per-source must be at least 1, got {per_source}")
    return chosen


def discover(db: Database, model: StoredModel | str | None, name: str, *, k: int = 10, per_source: int | None = None,
             where: Where | None = None, method: str | None = None, save: bool = True,
             loaded: tuple[IndexRecord, Any] | None = None, refine: Any = None) -> DiscoverOutcome:
    """Propose the next k frames to review for `name`; stored as a search run unless save is False.

    `where`: a --where string or a compiled SqlFilter, as for `search()`; `loaded`: the faiss
    registry row and index already in memory (the server's), passed on to every search;
    `refine`: the refine store loaded with that index. The server passes both: after `index
    update` the files of the generation it still serves are gone, and only its mappings hold them.
    """
    chosen = check_discover_options(k=k, per_source=per_source, method=method)
    if not isinstance(model, StoredModel):
        from sisyphus_db.search.indexing import resolve_model

        model = resolve_model(db, model)
    name = require_label(db, name)
    started = time.perf_counter()
    positive_ids, negative_ids = label_frame_ids(db, name)
    if not positive_ids:
        raise LabelError(f"label {name!r} has no positive frames to start from: "
                         f"`sisyphus label add {name} --frames ID`")
    _, positives = vectors_by_id(db, model.id, model.dim, positive_ids)
    if not len(positives):
        raise LabelError(f"the positives of label {name!r} have no {model.name} vectors: choose another --model")
    _, negatives = vectors_by_id(db, model.id, model.dim, negative_ids)
    record = loaded[0] if loaded is not None else find_index(db, model.id, "faiss")
    backend = "faiss" if record is not None and record.state == "ready" else "exact"
    round_ = _Round(db, model, backend, where, loaded if backend == "faiss" else None,
                    refine=refine if backend == "faiss" and loaded is not None else None, labelled=set(positive_ids) | set(negative_ids),
                    positives=positives, negatives=negatives)
    rank_method = _METHODS[chosen]
    # Deep enough for k once the labelled frames near the query are dropped; a shortfall digs deeper.
    depth = min(MAX_K, max(2 * k, min(FIRST_DEPTH_MAX, 2 * k + len(round_.labelled))))
    while True:
        round_.exhausted = True  # set back to False by any search that could still give more
        ranked = _cap_per_source(rank_method(round_, depth, k), round_.hits, per_source, k)
        if len(ranked) >= k or round_.exhausted or depth >= MAX_K:
            break
        depth = min(MAX_K, depth * 4)
    hits = [dataclasses.replace(round_.hits[frame_id], rank=rank, distance=float(distance))
            for rank, (frame_id, distance, _) in enumerate(ranked, start=1)]
    scores = [score for _, _, score in ranked]
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    params = {"method": chosen, "k": k, "per_source": per_source, "model": model.name, "depth": depth,
              "searches": round_.searches, "positives": len(positives), "negatives": len(negatives),
              **round_.extra}
    run_id = None
    if save:
        run_id = save_run(db, model_id=model.id, query={"kind": "discover", "label": name, "method": chosen},
                          where=where_description(where), backend=backend, k=k, params=params, elapsed_ms=elapsed_ms,
                          name=f"discover {name}", hits=hits)
    return DiscoverOutcome(name, run_id, chosen, hits, scores, backend, params, elapsed_ms, round_.warnings)


class _Round:
    """One discover call's state: the searches it ran, the frames they returned, what is labelled."""

    def __init__(self, db: Database, model: StoredModel, backend: str, where: Where | None,
                 loaded: tuple[IndexRecord, Any] | None, *, refine: Any = None, labelled: set[int],
                 positives: npt.NDArray[np.float32], negatives: npt.NDArray[np.float32]) -> None:
        self.db, self.model, self.backend, self.where, self.loaded = db, model, backend, where, loaded
        self.refine = refine
        self.labelled = labelled
        self.positives, self.negatives = positives, negatives
        self.hits: dict[int, SearchHit] = {}
        self.searches = 0
        self.exhausted = False
        self.warnings: list[str] = []
        self.extra: dict[str, Any] = {}

    def neighbours(self, vector: npt.NDArray[np.float32], depth: int) -> list[tuple[int, float]]:
        """The unlabelled frames among the `depth` nearest to `vector`, nearest first."""
        outcome = search(self.db, self.model, Query(vector, {"kind": "discover"}),
                         SearchRequest(k=depth, backend=self.backend, where=self.where, save=False),
                         loaded=self.loaded, refine=self.refine)
        self.searches += 1
        for warning in outcome.warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)
        if len(outcome.hits) >= depth:
            self.exhausted = False
        for hit in outcome.hits:
            self.hits.setdefault(hit.frame_id, hit)
        return [(hit.frame_id, hit.distance) for hit in outcome.hits if hit.frame_id not in self.labelled]

    def vectors(self, frame_ids: list[int]) -> dict[int, npt.NDArray[np.float32]]:
        ids, vectors = vectors_by_id(self.db, self.model.id, self.model.dim, frame_ids)
        return {int(i): v for i, v in zip(ids.tolist(), vectors, strict=True)}

    def nearest_positive(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return (1.0 - (vectors @ self.positives.T).max(axis=1)).astype(np.float32)


def _rocchio(r: _Round, depth: int, k: int) -> list[Candidate]:
    query = feedback.rocchio(r.positives, r.negatives)
    return [(frame_id, distance, None) for frame_id, distance in r.neighbours(query, depth)]


def _expand(r: _Round, depth: int, k: int) -> list[Candidate]:
    query = feedback.rocchio(r.positives, r.negatives)
    first = r.neighbours(query, max(depth, feedback.EXPAND_TOP))
    head = r.vectors([frame_id for frame_id, _ in first[:3 * feedback.EXPAND_TOP]])
    if len(r.negatives):
        # A top result nearer to a known negative than to every positive would expand the
        # query toward the negatives: it is left out of the expansion.
        head = {frame_id: v for frame_id, v in head.items()
                if float((r.negatives @ v).max()) <= float((r.positives @ v).max())}
    ordered = [frame_id for frame_id, _ in first if frame_id in head][:feedback.EXPAND_TOP]
    top = {frame_id: head[frame_id] for frame_id in ordered}
    if not top:
        return [(frame_id, distance, None) for frame_id, distance in first]
    expanded = feedback.expanded_query(r.positives, np.stack(list(top.values())), r.negatives)
    r.extra["expanded_with"] = sorted(top)
    return [(frame_id, distance, None) for frame_id, distance in r.neighbours(expanded, depth)]


def _multi(r: _Round, depth: int, k: int) -> list[Candidate]:
    chosen = feedback.spread_queries(r.positives, MAX_QUERIES)
    rankings: list[list[int]] = []
    nearest: dict[int, float] = {}
    for index in chosen:
        # Each look is pushed away from the negatives as Rocchio's query is: the common
        # scene the negatives share weighs less, what makes the class weighs more.
        query = feedback.rocchio(r.positives[index:index + 1], r.negatives)
        found = r.neighbours(query, depth)
        rankings.append([frame_id for frame_id, _ in found])
        for frame_id, distance in found:
            nearest[frame_id] = min(distance, nearest.get(frame_id, 2.0))
    fused = feedback.reciprocal_rank_fusion(rankings)
    if len(r.negatives) and fused:
        # A candidate nearer to a known negative than to every positive is most likely one
        # more negative: it keeps its place among its kind, after the others.
        head = [frame_id for frame_id, _ in fused[:max(3 * k, 30)]]
        vectors = r.vectors(head)
        near_negative = {frame_id for frame_id, v in vectors.items()
                         if float((r.negatives @ v).max()) > float((r.positives @ v).max())}
        fused = [item for item in fused if item[0] not in near_negative] + \
                [item for item in fused if item[0] in near_negative]
        r.extra["demoted"] = len(near_negative)
    return [(frame_id, nearest[frame_id], score) for frame_id, score in fused]


def _classifier(r: _Round, depth: int, k: int) -> list[Candidate]:
    chosen = feedback.spread_queries(r.positives, MAX_QUERIES)
    per_query = max(depth, POOL_PER_QUERY)
    pool: list[int] = []
    for index in chosen:
        for frame_id, _ in r.neighbours(r.positives[index], per_query):
            if frame_id not in pool:
                pool.append(frame_id)
    if not pool:
        return []
    vectors = r.vectors(pool)
    pool = [frame_id for frame_id in pool if frame_id in vectors]
    candidates = np.stack([vectors[frame_id] for frame_id in pool])
    negatives = r.negatives
    weak = 0
    if len(negatives) < MIN_NEGATIVES:
        random_frames = _random_unlabelled(r, WEAK_NEGATIVES)
        weak = len(random_frames)
        if weak:
            negatives = np.vstack([negatives, random_frames]) if len(negatives) else random_frames
    r.extra.update({"pool": len(pool), "weak_negatives": weak})
    if not len(negatives):
        # Nothing to tell the class from: rank by closeness to the positives.
        distances = r.nearest_positive(candidates)
        order = np.argsort(distances, kind="stable")
        return [(pool[i], float(distances[i]), None) for i in order]
    x = np.vstack([r.positives, negatives])
    y = np.concatenate([np.ones(len(r.positives), np.float32), np.zeros(len(negatives), np.float32)])
    probability = feedback.predict_logistic(feedback.train_logistic(x, y), candidates)
    distances = r.nearest_positive(candidates)
    order = sorted(range(len(pool)), key=lambda i: (-probability[i], distances[i], pool[i]))
    return [(pool[i], float(distances[i]), float(probability[i])) for i in order]


def _random_unlabelled(r: _Round, count: int) -> npt.NDArray[np.float32]:
    """Vectors of about `count` random frames, drawn by id (index lookups, never a scan)."""
    with r.db.transaction() as conn:
        low, high = conn.execute(sa.text("SELECT min(frame_id), max(frame_id) FROM embeddings WHERE model_id = :m"),
                                 {"m": r.model.id}).one()
    if low is None:
        return np.empty((0, r.model.dim), np.float32)
    # Seeded by what is labelled, so the same state proposes the same frames.
    rng = np.random.default_rng(len(r.labelled) * 7919 + int(low))
    drawn = rng.integers(int(low), int(high) + 1, size=count * 4)
    vectors = r.vectors([int(i) for i in drawn if int(i) not in r.labelled])
    picked = list(vectors.values())[:count]
    return np.stack(picked) if picked else np.empty((0, r.model.dim), np.float32)


_METHODS: dict[str, Callable[[_Round, int, int], list[Candidate]]] = {
    "rocchio": _rocchio, "multi": _multi, "classifier": _classifier, "expand": _expand}


def _cap_per_source(ranked: list[Candidate], hits: dict[int, SearchHit], per_source: int | None,
                    k: int) -> list[Candidate]:
    kept: list[Candidate] = []
    counts: dict[int, int] = {}
    for candidate in ranked:
        hit = hits.get(candidate[0])
        if hit is None:
            continue
        if per_source is not None:
            if counts.get(hit.source_id, 0) >= per_source:
                continue
            counts[hit.source_id] = counts.get(hit.source_id, 0) + 1
        kept.append(candidate)
        if len(kept) == k:
            break
    return kept
