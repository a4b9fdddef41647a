"""Nearest neighbours through each backend: the faiss sidecar, pgvector HNSW, or exact SQL.

Every function returns (frame ids, cosine distances), nearest first. A `where` filter
is evaluated inside a read-only savepoint that is rolled back afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import HalfVector

from sisyphus_db.db.database import Database
from sisyphus_db.search.filters import FILTER_TIMEOUT_MS, FrameFilter, Where, filter_error, where_parts
from sisyphus_db.store.indexes import IndexRecord
from sisyphus_db.store.registry import StoredModel

Neighbours = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


def _sql_neighbours(db: Database, model: StoredModel, query: npt.NDArray[np.float32], k: int, *, where: Where | None,
                    settings: dict[str, str]) -> Neighbours:
    from sisyphus_db.search.pgvector_index import hnsw_expression

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

def faiss_neighbours(db: Database, model: StoredModel, record: IndexRecord, query: npt.NDArray[np.float32],
                     depth: int, *, nprobe: int | None, frame_filter: FrameFilter | None,
                     index: Any = None, store: Any = None, wanted: int | None = None) -> tuple[Neighbours, dict[str, Any]]:
    """ANN candidates from the sidecar, re-ranked exactly with the refine store's vectors in memory.

    The plans live in sisyphus_db.search.faiss_plans.

    `depth` is how many candidates to re-rank. With a filter, the filter is first checked
    on the top `CANDIDATES_FIRST x depth` ANN candidates only: a broad filter keeps
    enough of them and no id list is ever built. Otherwise every matching id is listed: a
    selective filter is searched exactly over its rows, a middling one through a faiss
    IDSelector with nprobe widened by the inverse selectivity, a broad one by a deeper
    over-fetch. `index`: the loaded index when the caller holds one (the server), else the
    file is loaded (and cached) here.
    """
    from sisyphus_db.search.faiss_plans import faiss_neighbours as planned

    return planned(db, model, record, query, depth, nprobe=nprobe, frame_filter=frame_filter, index=index,
                   store=store, wanted=wanted)
