"""`sisyphus knn-graph`: every frame searched against the faiss index in bulk, stored as knn_edges.

This is the batch job faiss is for (on the GPU when the index is there); the graph then
serves SQL, e.g. near-duplicates across videos:
    SELECT * FROM knn_edges e JOIN frames a ON a.id = e.frame_id JOIN frames b ON b.id = e.neighbor_id
    WHERE a.source_id <> b.source_id AND e.distance < 0.05;

Where the time went at 1M frames (266 s before): 1M ANN searches, reading every vector
back from PostgreSQL, a Python loop writing 10M COPY rows, and per-row foreign-key checks
and random index inserts on knn_edges. Now an IVF index's lists are compared in dense
exact blocks over the refine store (sisyphus_db.ann.knn_lists; only frames newer than the
index are searched one by one), the COPY rows are built by numpy in binary, and the edges are loaded with the
table's foreign keys and neighbour index set aside and re-created afterwards (one
validating join and one sorted index build instead of 10M trigger calls and random
inserts), all in one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from sisyphus_db.db.database import Database
from sisyphus_db.search.indexing import load_faiss_index, require_faiss_record
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import frame_ids_of_model, model_vectors

# Below this many edges the constraints stay in place: re-creating them costs more than it saves.
BULK_EDGES = 200_000
_COPY_BLOCK = 1_000_000


@dataclass(frozen=True)
class KnnGraphReport:
    frames: int
    edges: int
    k: int
    seconds: float
    search_seconds: float
    store_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "edges": self.edges, "k": self.k, "seconds": round(self.seconds, 3),
                "search_seconds": round(self.search_seconds, 3), "store_seconds": round(self.store_seconds, 3)}


def build_knn_graph(db: Database, model: StoredModel, *, k: int = 10, nprobe: int | None = None,
                    depth: int | None = None) -> KnnGraphReport:
    """Replace the model's knn_edges with the k nearest other frames of every frame.

    depth: ANN candidates re-ranked exactly per frame (default: the index's tuned rerank_k,
    at least k + 1). Frames deleted since the last `index update` get no edges and are no
    one's neighbour: PostgreSQL's frame ids decide.
    """
    import faiss

    from sisyphus_db.ann.knn import knn_graph
    from sisyphus_db.ann.knn_lists import knn_graph_by_lists
    from sisyphus_db.search.refine_sidecar import load_refine

    started = time.perf_counter()
    record = require_faiss_record(db, model)
    index = load_faiss_index(record)
    store = load_refine(record)
    live = None
    if store is None:
        ids, vectors = model_vectors(db, model.id, model.dim)
    else:
        live = frame_ids_of_model(db, model.id)
        known = live[store.rows_of(live) >= 0]
        newer_ids, newer = model_vectors(db, model.id, model.dim, above_id=record.watermark)
        newer_keep = ~np.isin(newer_ids, known)
        # Only the frames the store lacks are held in float32 here (at 10M x 128, all of them are 5 GB).
        newer_ids, newer = newer_ids[newer_keep], newer[newer_keep]
        ids = np.concatenate([known, newer_ids])
    search_started = time.perf_counter()
    rerank_depth = max(k + 1, depth or int(record.params.get("rerank_k") or k + 1))
    probe = nprobe or record.params.get("nprobe")
    if store is not None and probe is not None and faiss.try_extract_index_ivf(index) is not None:
        # Indexed frames: exact blocks per inverted list; frames newer than the index: searched one by one.
        sources, targets, distances = knn_graph_by_lists(index, store, k, nprobe=int(probe), live_ids=live)
        if newer_ids.size:
            extra = knn_graph(index, newer, newer_ids, k, nprobe=probe, refine=store, depth=rerank_depth)
            sources, targets, distances = (np.concatenate([a, b]) for a, b in zip((sources, targets, distances),
                                                                                 extra, strict=True))
            order = np.argsort(sources, kind="stable")
            sources, targets, distances = sources[order], targets[order], distances[order]
    else:
        if store is not None:  # a flat index: every frame is a query, with its vector
            ids, vectors = store.vectors_of(known)
            if newer_ids.size:
                ids, vectors = np.concatenate([ids, newer_ids]), np.concatenate([vectors, newer])
        sources, targets, distances = knn_graph(index, vectors, ids, k, nprobe=probe, refine=store,
                                                depth=rerank_depth if store is not None else None)
    search_seconds = time.perf_counter() - search_started
    # Deleted frames may linger in the index until `index update`: keep edges between live frames.
    keep = np.isin(targets, ids)
    sources, targets, distances = sources[keep], targets[keep], distances[keep]
    ranks = _ranks_within_groups(sources)
    store_started = time.perf_counter()
    _store_edges(db, model.id, sources, ranks, targets, distances)
    now = time.perf_counter()
    return KnnGraphReport(int(ids.size), int(sources.size), k, now - started, search_seconds, now - store_started)


def _edge_rows(model_id: int, sources: npt.NDArray[np.int64], ranks: npt.NDArray[np.int64],
               targets: npt.NDArray[np.int64], distances: npt.NDArray[np.float32]) -> bytes:
    """Binary COPY rows of knn_edges (model_id, frame_id, rank, neighbor_id, distance), built by numpy."""
    row = np.dtype([("fields", ">i2"), ("l1", ">i4"), ("model", ">i4"), ("l2", ">i4"), ("frame", ">i8"),
                    ("l3", ">i4"), ("rank", ">i4"), ("l4", ">i4"), ("neighbor", ">i8"), ("l5", ">i4"),
                    ("distance", ">f4")])
    out = np.empty(sources.size, dtype=row)
    out["fields"], out["l1"], out["model"], out["l2"], out["frame"] = 5, 4, model_id, 8, sources
    out["l3"], out["rank"], out["l4"], out["neighbor"] = 4, ranks, 8, targets
    out["l5"], out["distance"] = 4, distances
    return out.tobytes()


def _store_edges(db: Database, model_id: int, sources: npt.NDArray[np.int64], ranks: npt.NDArray[np.int64],
                 targets: npt.NDArray[np.int64], distances: npt.NDArray[np.float32]) -> None:
    with db.copy_connection() as conn:
        conn.execute("DELETE FROM knn_edges WHERE model_id = %s", (model_id,))
        set_aside = _set_aside_constraints(conn) if sources.size >= BULK_EDGES else []
        with conn.cursor().copy(
            "COPY knn_edges (model_id, frame_id, rank, neighbor_id, distance) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
            for start in range(0, sources.size, _COPY_BLOCK):
                block = slice(start, start + _COPY_BLOCK)
                copy.write(_edge_rows(model_id, sources[block], ranks[block], targets[block], distances[block]))
            copy.write((-1).to_bytes(2, "big", signed=True))
        for statement in set_aside:
            conn.execute(statement)


def _set_aside_constraints(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop knn_edges' foreign keys and non-unique indexes; return the statements that restore them.

    Their definitions are read from the catalog, so the restored ones are exactly the
    migration's (names included). Restoring a foreign key validates every row in one join.
    """
    restore: list[str] = []
    for name, definition in conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'knn_edges'::regclass AND contype = 'f' ORDER BY conname").fetchall():
        conn.execute(f'ALTER TABLE knn_edges DROP CONSTRAINT "{name}"')
        restore.append(f'ALTER TABLE knn_edges ADD CONSTRAINT "{name}" {definition}')
    for name, definition in conn.execute(
            "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = 'knn_edges'::regclass AND NOT x.indisunique ORDER BY i.relname").fetchall():
        conn.execute(f'DROP INDEX "{name}"')
        restore.insert(0, definition)  # indexes first: the foreign keys' validation does not need them
    return restore


def _ranks_within_groups(sources: np.ndarray) -> np.ndarray:
    """1-based position of each edge within its run of equal sources (edges come grouped)."""
    if sources.size == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(sources)) + 1]
    lengths = np.diff(np.r_[starts, sources.size])
    return np.arange(sources.size) - np.repeat(starts, lengths) + 1
