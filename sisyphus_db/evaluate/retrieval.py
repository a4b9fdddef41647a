"""Batched nearest-neighbour search over a set of stored frames, per backend, for evaluations.

An evaluation asks many queries against one set of frames (the reference images, a
labelled tree) through each backend it compares:

- `exact`: brute force over the vectors read back from PostgreSQL (the same halfvec
  values an exact SQL scan compares, so the same ranking, without one scan per query);
- `faiss`: an in-memory index built with the requested factory over just these frames,
  tuned like `sisyphus index build` (nprobe, rerank depth) and re-ranked exactly. It is
  never written to the registry: an evaluation must not replace the user's sidecar;
- `pgvector`: the model's HNSW index in PostgreSQL (built when missing or stale), one
  query at a time, restricted to these frames by a filter when the model holds others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.store.registry import StoredModel

logger = logging.getLogger(__name__)

EVAL_BACKENDS = ("exact", "faiss", "pgvector")

Ids = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]
Progress = Callable[[str, int, int | None], None]  # (stage, advance, total), as in search.indexing


@dataclass(frozen=True)
class BackendSpec:
    """One backend to evaluate; `factory` is the requested faiss factory (faiss only)."""

    backend: str
    factory: str | None = None


def parse_backends(backends: str, factories: Sequence[str] = ("auto",)) -> list[BackendSpec]:
    """`exact,faiss,pgvector` and the faiss factories -> one spec per backend (faiss: per factory)."""
    names = [name.strip() for name in backends.split(",") if name.strip()]
    if not names:
        raise InputError("--backends is empty: give e.g. exact,faiss,pgvector")
    unknown = [name for name in names if name not in EVAL_BACKENDS]
    if unknown:
        raise InputError(f"unknown backend {unknown[0]!r}: expected some of {', '.join(EVAL_BACKENDS)}")
    wanted = [factory.strip() for factory in factories if factory.strip()] or ["auto"]
    specs: list[BackendSpec] = []
    for name in dict.fromkeys(names):
        if name == "faiss":
            specs.extend(BackendSpec("faiss", factory) for factory in dict.fromkeys(wanted))
        else:
            specs.append(BackendSpec(name))
    return specs


def split_factories(values: Sequence[str]) -> list[str]:
    """Factories from repeated options or one option separated by ';' (factory strings hold commas)."""
    return [part.strip() for value in values for part in value.split(";") if part.strip()]


class Searcher(Protocol):
    backend: str
    factory: str | None  # the factory actually built (auto resolved), None for exact/pgvector
    requested: str | None
    params: dict[str, Any]

    def search(self, queries: Vectors, k: int) -> tuple[Ids, Vectors]:
        """(ids (m, k), cosine distances (m, k)), nearest first; id -1 / inf pad short rows."""
        ...


@dataclass
class ExactSearcher:
    ids: Ids
    vectors: Vectors
    backend: str = "exact"
    factory: str | None = None
    requested: str | None = None

    def __post_init__(self) -> None:
        self.params: dict[str, Any] = {}

    def search(self, queries: Vectors, k: int) -> tuple[Ids, Vectors]:
        from sisyphus_db.ann.search import exact_search

        distances, found = exact_search(self.vectors, self.ids, queries, k)
        return found, distances


class FaissSearcher:
    backend = "faiss"
    nprobe: int | None
    rerank_k: int

    def __init__(self, ids: Ids, vectors: Vectors, requested: str, progress: Progress | None = None, *,
                 rerank: bool = True, like: FaissSearcher | None = None) -> None:
        """rerank=False ranks by the index's own quantized distances (the Active Indexing paper's
        setting). like: reuse that searcher's trained index (emptied, then filled with these
        vectors) and its nprobe and rerank depth, so only the stored vectors differ."""
        from sisyphus_db.ann.build import build_index
        from sisyphus_db.ann.factory import choose_factory
        from sisyphus_db.ann.tune import tune

        self.ids = ids
        self.vectors = vectors
        self.requested = requested
        self.rerank = rerank
        self.factory = choose_factory(int(ids.size), int(vectors.shape[1])) if requested == "auto" else requested
        if like is not None:
            import faiss

            from sisyphus_db.ann.build import add_vectors

            self.factory, self.index = like.factory, faiss.clone_index(like.index)
            self.index.reset()
            add_vectors(self.index, vectors, ids)
            self.nprobe, self.rerank_k = like.nprobe, like.rerank_k
            self.params = {**like.params, "rerank": rerank}
        else:
            if progress is not None:
                progress(f"build faiss {self.factory}", 0, None)
            self.index = build_index(vectors, ids, factory=self.factory, device="cpu")
            tuned = tune(self.index, vectors, ids)
            self.nprobe = tuned.nprobe
            self.rerank_k = int(tuned.rerank_k)
            self.params = {"nprobe": tuned.nprobe, "rerank_k": self.rerank_k,
                           "tuned_recall_at_10": tuned.recall_at_10, "rerank": rerank}
        # Row of each id in `vectors`, for the exact rerank of ANN candidates.
        self._order = np.argsort(ids)
        self._sorted = ids[self._order]

    def search(self, queries: Vectors, k: int) -> tuple[Ids, Vectors]:
        from sisyphus_db.ann.search import search

        if not self.rerank:
            distances, found = search(self.index, queries, k, nprobe=self.nprobe)
            return found, distances
        depth = min(max(k, self.rerank_k), int(self.index.ntotal))
        _, candidates = search(self.index, queries, depth, nprobe=self.nprobe)
        out_ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
        out_dist = np.full((queries.shape[0], k), np.inf, dtype=np.float32)
        for row, (query, found) in enumerate(zip(queries, candidates, strict=True)):
            found = found[found >= 0]
            if found.size == 0:
                continue
            # The PQ codes only shortlist; the order comes from the full vectors, as in `sisyphus search`.
            rows = self._order[np.searchsorted(self._sorted, found)]
            sims = self.vectors[rows] @ query
            order = np.lexsort((found, -sims))[:k]
            out_ids[row, :order.size] = found[order]
            out_dist[row, :order.size] = np.clip(1.0 - sims[order], 0.0, 2.0)
        return out_ids, out_dist


class PgvectorSearcher:
    backend = "pgvector"
    factory: str | None = None
    requested: str | None = None

    def __init__(self, db: Database, model: StoredModel, source_ids: Sequence[int], n_frames: int,
                 progress: Progress | None = None) -> None:
        from sisyphus_db.search.pgvector_index import build_pgvector_index
        from sisyphus_db.store.indexes import find_index

        self.db = db
        self.model = model
        with db.transaction() as conn:
            total, newest = conn.execute(sa.text(
                "SELECT count(*), coalesce(max(frame_id), 0) FROM embeddings WHERE model_id = :m"),
                {"m": model.id}).one()
        record = find_index(db, model.id, "pgvector")
        if record is None or record.watermark < int(newest):
            if progress is not None:
                progress("build pgvector HNSW", 0, None)
            record = build_pgvector_index(db, model).record
        self.ef_search = int(record.params.get("ef_search", 40))
        self.factory = record.factory
        # Other frames of the same model (other sources) must not answer the queries.
        self.where = None if int(total) == n_frames else \
            f"frames.source_id IN ({', '.join(str(int(s)) for s in sorted(set(source_ids)))})"
        self.params = {"ef_search": self.ef_search, "filtered": self.where is not None}

    def search(self, queries: Vectors, k: int) -> tuple[Ids, Vectors]:
        from sisyphus_db.search.backends import pgvector_neighbours

        out_ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
        out_dist = np.full((queries.shape[0], k), np.inf, dtype=np.float32)
        for row, query in enumerate(queries):
            found, distances = pgvector_neighbours(self.db, self.model, query, k,
                                                   ef_search=max(self.ef_search, k), where=self.where)
            out_ids[row, :found.size] = found[:k]
            out_dist[row, :found.size] = distances[:k]
        return out_ids, out_dist


def make_searcher(spec: BackendSpec, db: Database, model: StoredModel, ids: Ids, vectors: Vectors,
                  source_ids: Sequence[int], progress: Progress | None = None, *, rerank: bool = True) -> Searcher:
    if spec.backend == "exact":
        return ExactSearcher(ids, vectors)
    if spec.backend == "faiss":
        return FaissSearcher(ids, vectors, spec.factory or "auto", progress, rerank=rerank)
    return PgvectorSearcher(db, model, source_ids, int(ids.size), progress)


def frames_by_path(db: Database, model: StoredModel, paths: Sequence[str]) -> dict[str, tuple[int, int]]:
    """path -> (frame id, source id) of the frames stored for these image paths under the model."""
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT f.path, f.id, f.source_id FROM frames f JOIN embeddings e ON e.frame_id = f.id "
            "WHERE e.model_id = :m AND f.path = ANY(:paths)"), {"m": model.id, "paths": list(paths)}).all()
    return {row[0]: (int(row[1]), int(row[2])) for row in rows}


def drop_self(found: Ids, distances: Vectors, self_ids: Ids, k: int) -> tuple[Ids, Vectors]:
    """Leave-one-out: remove each row's own id (or, when absent, its last entry); keep k columns."""
    keep_ids = np.full((found.shape[0], k), -1, dtype=np.int64)
    keep_dist = np.full((found.shape[0], k), np.inf, dtype=np.float32)
    for row in range(found.shape[0]):
        mask = found[row] != self_ids[row]
        ids_row, dist_row = found[row][mask][:k], distances[row][mask][:k]
        keep_ids[row, :ids_row.size] = ids_row
        keep_dist[row, :dist_row.size] = dist_row
    return keep_ids, keep_dist
