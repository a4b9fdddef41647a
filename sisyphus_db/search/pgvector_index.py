"""pgvector's HNSW index: an expression index on one model's partition of `embeddings`,
`(vec::halfvec(d)) halfvec_cosine_ops`, with ef_search tuned to a target recall.

The alternative to the faiss sidecar, searched by `search.backends.pgvector_neighbours`;
both are registered in `ann_indexes`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError
from sisyphus_db.search.indexing import DEFAULT_TARGET_RECALL, METRIC, BuildReport, Progress
from sisyphus_db.store.indexes import save_index
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import model_vectors

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH_STEPS = (40, 80, 160, 320, 640, 1000)
HNSW_MIN_MAINTENANCE_WORK_MEM = 1 << 30


def embedding_partition(model_id: int) -> str:
    """The partition of `embeddings` that holds one model's vectors (created with the model)."""
    return f"embeddings_m{int(model_id)}"


def hnsw_index_name(model: StoredModel) -> str:
    return f"embeddings_hnsw_model_{model.id}"


def hnsw_expression(model: StoredModel, alias: str = "") -> str:
    """The indexed expression; queries must spell it exactly so the planner uses the index."""
    prefix = f"{alias}." if alias else ""
    return f"({prefix}vec::halfvec({model.dim}))"


def build_pgvector_index(db: Database, model: StoredModel, *, target_recall: float = DEFAULT_TARGET_RECALL,
                         progress: Progress | None = None) -> BuildReport:
    """An HNSW expression index on the model's vectors, with ef_search tuned to the target recall."""
    started = time.perf_counter()
    with db.transaction() as conn:
        n = int(conn.exec_driver_sql(f"SELECT count(*) FROM embeddings WHERE model_id = {model.id}").scalar_one())
    if n == 0:
        raise AnnIndexError(f"model {model.name} has no vectors: run `sisyphus ingest` first")
    if progress is not None:
        progress("build hnsw", 0, None)
    with db.transaction() as conn:
        # At least 1 GB (the graph is built much faster in memory); a higher server setting is kept.
        conn.exec_driver_sql(
            "SELECT set_config('maintenance_work_mem', greatest(pg_size_bytes(current_setting("
            f"'maintenance_work_mem')), {HNSW_MIN_MAINTENANCE_WORK_MEM}) / 1024 || 'kB', true)")
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {hnsw_index_name(model)}")
        conn.exec_driver_sql(
            # On the model's own partition (migration 0005): a query on `embeddings` for
            # this model prunes to it and uses the index; other models are not touched.
            f"CREATE INDEX {hnsw_index_name(model)} ON {embedding_partition(model.id)} USING hnsw "
            f"({hnsw_expression(model)} halfvec_cosine_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
        )
        # A new partition has no statistics yet; without them the planner prefers a scan.
        conn.exec_driver_sql(f"ANALYZE {embedding_partition(model.id)}")
        watermark = int(conn.exec_driver_sql(
            f"SELECT coalesce(max(frame_id), 0) FROM embeddings WHERE model_id = {model.id}").scalar_one())
    build_seconds = time.perf_counter() - started
    ef_search, recall, table = _tune_ef_search(db, model, target_recall)
    record = save_index(
        db, model_id=model.id, backend="pgvector", factory=f"HNSW(m={HNSW_M},ef_construction={HNSW_EF_CONSTRUCTION})",
        metric=METRIC, path=None, sha256=None, ntotal=n, watermark=watermark,
        params={"ef_search": ef_search, "target_recall": target_recall, "index_seconds": round(build_seconds, 3)},
        recall_at_10=recall, build_seconds=time.perf_counter() - started, device="postgres", state="ready",
    )
    return BuildReport(record, n, time.perf_counter() - started, table, recall >= target_recall)


def _tune_ef_search(db: Database, model: StoredModel, target_recall: float,
                    n_queries: int = 100) -> tuple[int, float, list[dict[str, Any]]]:
    """Smallest ef_search whose recall@10 on sampled stored vectors reaches the target.

    The same protocol as the faiss tuning (sisyphus_db.ann.tune): each sampled frame's own
    id is left out on both sides, since a stored vector always finds itself and would
    inflate the recall that held-out queries then do not get. The ground truth is brute
    force over the vectors as read back (the same halfvec values the SQL exact search uses).
    """
    from sisyphus_db.ann.search import exact_search
    from sisyphus_db.search.backends import pgvector_neighbours

    ids, vectors = model_vectors(db, model.id, model.dim)
    rng = np.random.default_rng(0)
    sample = rng.choice(ids.size, size=min(n_queries, ids.size), replace=False)
    _, nearest = exact_search(vectors, ids, vectors[sample], 11)
    truth = [set([int(i) for i in row if i >= 0 and i != ids[q]][:10]) for row, q in zip(nearest, sample, strict=True)]
    table: list[dict[str, Any]] = []
    for ef in HNSW_EF_SEARCH_STEPS:
        hits = 0
        for row, i in enumerate(sample):
            found, _ = pgvector_neighbours(db, model, vectors[i], 11, ef_search=ef)
            hits += len(truth[row] & set([int(f) for f in found if f != ids[i]][:10]))
        recall = hits / max(1, sum(len(t) for t in truth))
        table.append({"ef_search": ef, "recall_at_10": recall})
        if recall >= target_recall:
            return ef, recall, table
    return HNSW_EF_SEARCH_STEPS[-1], table[-1]["recall_at_10"], table


def drop_hnsw(db: Database, model: StoredModel) -> None:
    with db.transaction() as conn:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {hnsw_index_name(model)}")
