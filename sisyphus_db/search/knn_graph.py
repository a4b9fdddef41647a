"""`sisyphus knn-graph`: every frame searched against the faiss index in bulk, stored as knn_edges.

This is the batch job faiss is for (on the GPU when the index is there); the graph then
serves SQL, e.g. near-duplicates across videos:
    SELECT * FROM knn_edges e JOIN frames a ON a.id = e.frame_id JOIN frames b ON b.id = e.neighbor_id
    WHERE a.source_id <> b.source_id AND e.distance < 0.05;
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sisyphus_db.db.database import Database
from sisyphus_db.search.indexing import load_faiss_index, require_faiss_record
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import model_vectors


@dataclass(frozen=True)
class KnnGraphReport:
    frames: int
    edges: int
    k: int
    seconds: float
    search_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "edges": self.edges, "k": self.k, "seconds": round(self.seconds, 3),
                "search_seconds": round(self.search_seconds, 3)}


def build_knn_graph(db: Database, model: StoredModel, *, k: int = 10, nprobe: int | None = None) -> KnnGraphReport:
    """Replace the model's knn_edges with the k nearest other frames of every frame."""
    from sisyphus_db.ann.knn import knn_graph

    started = time.perf_counter()
    record = require_faiss_record(db, model)
    index = load_faiss_index(record)
    ids, vectors = model_vectors(db, model.id, model.dim)
    search_started = time.perf_counter()
    sources, targets, distances = knn_graph(index, vectors, ids, k, nprobe=nprobe or record.params.get("nprobe"))
    search_seconds = time.perf_counter() - search_started
    # Deleted frames may linger in the index until `index update`: keep edges between live frames.
    live = np.isin(targets, ids)
    sources, targets, distances = sources[live], targets[live], distances[live]
    ranks = _ranks_within_groups(sources)
    with db.copy_connection() as conn:
        conn.execute("DELETE FROM knn_edges WHERE model_id = %s", (model.id,))
        with conn.cursor().copy(
            "COPY knn_edges (model_id, frame_id, rank, neighbor_id, distance) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["integer", "bigint", "integer", "bigint", "real"])
            for source, rank, target, distance in zip(sources.tolist(), ranks.tolist(), targets.tolist(),
                                                      distances.tolist(), strict=True):
                copy.write_row((model.id, source, rank, target, distance))
    return KnnGraphReport(int(ids.size), int(sources.size), k, time.perf_counter() - started, search_seconds)


def _ranks_within_groups(sources: np.ndarray) -> np.ndarray:
    """1-based position of each edge within its run of equal sources (edges come grouped)."""
    if sources.size == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(sources)) + 1]
    lengths = np.diff(np.r_[starts, sources.size])
    return np.arange(sources.size) - np.repeat(starts, lengths) + 1
