"""Nearest neighbours through each backend: the faiss sidecar, pgvector HNSW, or exact SQL.

Every function returns (frame ids, cosine distances), nearest first. A `where` filter
is evaluated inside a read-only savepoint that is rolled back afterwards.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import HalfVector

from sisyphus_db.db.database import Database
from sisyphus_db.search.filters import FILTER_TIMEOUT_MS, FrameFilter, Where, filter_error, where_parts
from sisyphus_db.store.indexes import IndexRecord
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import vectors_by_id

Neighbours = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


def _sql_neighbours(db: Database, model: StoredModel, query: npt.NDArray[np.float32], k: int, *, where: Where | None,
                    settings: dict[str, str]) -> Neighbours:
    from sisyphus_db.search.indexing import hnsw_expression

    where_sql, where_params = where_parts(where) if where is not None else (None, {})
    expression = hnsw_expression(model, "e")
    joins = " JOIN frames ON frames.id = e.frame_id JOIN sources ON sources.id = frames.source_id" if where_sql else ""
    condition = f" AND ({where_sql})" if where_sql else ""
    sql = (
        "SELECT id, dist FROM ("
        f"SELECT e.frame_id AS id, {expression} <=> %(q)s AS dist FROM embeddings e{joins} "
        f"WHERE e.model_id = %(model)s{condition} ORDER BY {expression} <=> %(q)s LIMIT %(k)s"
        ") nearest ORDER BY dist, id"
    )
    with db.copy_connection() as conn:
        try:
            with conn.transaction(force_rollback=True):
                if where_sql:
                    conn.execute("SET LOCAL transaction_read_only = on")
                conn.execute(f"SET LOCAL statement_timeout = {FILTER_TIMEOUT_MS}")
                for name, value in settings.items():
                    conn.execute(f"SET LOCAL {name} = {value}")
                rows = conn.execute(sql, {**where_params, "q": HalfVector(query), "model": model.id, "k": int(k)},
                                    prepare=False).fetchall()
        except psycopg.Error as exc:
            raise filter_error(exc) from None
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    distances = np.fromiter((r[1] for r in rows), dtype=np.float32, count=len(rows))
    return ids, distances


def exact_neighbours(db: Database, model: StoredModel, query: npt.NDArray[np.float32], k: int, *,
                     where: Where | None = None) -> Neighbours:
    """Exact search in PostgreSQL (a sequential scan; the ground truth of tests and metrics)."""
    return _sql_neighbours(db, model, query, k, where=where,
                           settings={"enable_indexscan": "off", "enable_bitmapscan": "off"})


def pgvector_neighbours(db: Database, model: StoredModel, query: npt.NDArray[np.float32], k: int, *,
                        ef_search: int = 40, where: Where | None = None) -> Neighbours:
    """Through the HNSW expression index; filters use iterative scans so k results still come back."""
    settings = {"hnsw.ef_search": str(max(int(ef_search), int(k)) if k <= 1000 else 1000)}
    if where:
        settings["hnsw.iterative_scan"] = "relaxed_order"
        settings["hnsw.max_scan_tuples"] = "200000"
    return _sql_neighbours(db, model, query, k, where=where, settings=settings)


# ---- faiss ---------------------------------------------------------------------------------

EXACT_CANDIDATES_MAX = 20_000  # a filter this selective is searched exactly: cheaper and perfect
SELECTOR_MAX_FRACTION = 0.25   # below this fraction of the index, search only the allowed ids
CANDIDATES_FIRST = 4           # a filter is first checked on this many times `depth` ANN candidates


def faiss_neighbours(db: Database, model: StoredModel, record: IndexRecord, query: npt.NDArray[np.float32],
                     depth: int, *, nprobe: int | None, frame_filter: FrameFilter | None,
                     index: Any = None) -> tuple[Neighbours, dict[str, Any]]:
    """ANN candidates from the sidecar, re-ranked exactly with the vectors from PostgreSQL.

    `depth` is how many candidates to re-rank. With a filter, the filter is first checked
    on the top `CANDIDATES_FIRST x depth` ANN candidates only: a broad filter keeps
    enough of them and no id list is ever built. Otherwise every matching id is listed: a
    selective filter is searched exactly over its rows, a middling one through a faiss
    IDSelector with nprobe widened by the inverse selectivity, a broad one by a deeper
    over-fetch. `index`: the loaded index when the caller holds one (the server), else the
    file is loaded (and cached) here.
    """
    from sisyphus_db.ann.search import exact_rerank, search
    from sisyphus_db.search.indexing import load_faiss_index

    index = load_faiss_index(record) if index is None else index
    ntotal = int(index.ntotal)
    nprobe = nprobe or record.params.get("nprobe")
    info: dict[str, Any] = {"nprobe": nprobe, "rerank_k": depth}
    candidates: npt.NDArray[np.int64]
    if frame_filter is None:
        info["strategy"] = "ann"
        _, found = search(index, query[None, :], min(depth, ntotal), nprobe=nprobe)
        candidates = found[0]
        info["exhausted"] = int((candidates >= 0).sum()) < depth
    else:
        fetch = min(ntotal, depth * CANDIDATES_FIRST)
        _, found = search(index, query[None, :], fetch, nprobe=nprobe)
        fetched = found[0][found[0] >= 0]
        passing = frame_filter.among(fetched)
        if passing.size >= depth or fetched.size < fetch:
            info["strategy"] = "filter-candidates"
            candidates = fetched[np.isin(fetched, passing)]
            info["exhausted"] = passing.size < depth
        else:
            allowed = frame_filter.all_ids()
            fraction = allowed.size / max(1, ntotal)
            info["selectivity"] = round(fraction, 6)
            if allowed.size <= EXACT_CANDIDATES_MAX:
                info["strategy"] = "exact-filtered"
                found_exact = exact_neighbours(db, model, query, depth, where=frame_filter.source)
                info["exhausted"] = found_exact[0].size < depth
                return found_exact, info
            if fraction < SELECTOR_MAX_FRACTION:
                info["strategy"] = "id-selector"
                widened = _widen(index, nprobe, fraction)
                info["nprobe"] = widened
                _, found = search(index, query[None, :], min(depth, allowed.size), nprobe=widened,
                                  allowed_ids=allowed)
                candidates = found[0]
            else:
                info["strategy"] = "over-fetch"
                deeper = min(ntotal, math.ceil(depth / fraction * 1.5))
                _, found = search(index, query[None, :], deeper, nprobe=nprobe)
                candidates = found[0][np.isin(found[0], allowed)]
                if candidates.size < min(depth, allowed.size):
                    info["strategy"] = "over-fetch+id-selector"
                    _, found = search(index, query[None, :], min(depth, allowed.size),
                                      nprobe=_widen(index, nprobe, fraction), allowed_ids=allowed)
                    candidates = found[0]
            # Exhausted: the index had no more candidates to give (deleted frames do not count as given).
            info["exhausted"] = int((candidates >= 0).sum()) < depth
    ids, vectors = vectors_by_id(db, model.id, model.dim, candidates)
    if ids.size == 0:
        return (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)), info
    ranked_ids, distances = exact_rerank(query, ids, vectors, min(depth, int(ids.size)))
    return (ranked_ids, distances), info


def _widen(index: Any, nprobe: int | None, fraction: float) -> int | None:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or nprobe is None:
        return None
    return int(min(ivf.nlist, math.ceil(nprobe / max(fraction, 1e-6))))
