"""Synthetic frames with clustered unit vectors, stored through sisyphus_db.store.

Frames are spread evenly over `n_sources` sources whose tags give filters of known
selectivity: with 100 sources, `city` is 'oslo' for 1 of them (1 %), 'paris' for 10
(10 %) and 'berlin' for 50 (50 %); the rest are 'rome'. Frame ids come from the table's
identity column and are never 0..n-1 (the sequence is moved past a gap first), so a
test that mixes up faiss positions and frame ids fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.ann.synthetic import clustered_vectors
from sisyphus_db.db.database import Database
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import StoredModel, register_model, upsert_source

SELECTIVITY_FILTERS = {
    0.01: "sources.tags->>'city' = 'oslo'",
    0.10: "sources.tags->>'city' = 'paris'",
    0.50: "sources.tags->>'city' = 'berlin'",
}
ID_GAP = 1_000_000


def city_of(source_number: int, n_sources: int) -> str:
    share = source_number / n_sources
    if share < 0.01:
        return "oslo"
    if share < 0.11:
        return "paris"
    if share < 0.61:
        return "berlin"
    return "rome"


@dataclass
class Corpus:
    model: StoredModel
    ids: npt.NDArray[np.int64]  # frame ids in load order
    vectors: npt.NDArray[np.float32]  # their vectors (float32, before the halfvec round trip)
    queries: npt.NDArray[np.float32]  # held-out vectors from the same clusters, never stored
    source_ids: list[int]
    cities: dict[int, str]  # frame id -> city tag of its source
    n_sources: int

    def ids_in(self, city: str) -> npt.NDArray[np.int64]:
        return np.array([i for i in self.ids.tolist() if self.cities[i] == city], dtype=np.int64)


def make_corpus(db: Database, n: int = 10_000, d: int = 64, *, n_sources: int = 100, n_queries: int = 100,
                model_name: str = "synthetic-64", seed: int = 0, uri_prefix: str = "/videos/clip") -> Corpus:
    """Store n frames with clustered vectors under a new model; hold out n_queries queries."""
    model = register_model(db, name=model_name, dim=d, weights_sha256=f"{seed:064x}", pooling="avg",
                           preprocessing={})
    data = clustered_vectors(n + n_queries, d, seed=seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(n + n_queries)
    stored, queries = data[order[:n]], data[order[n:]]
    with db.transaction() as conn:
        # Move the identity past a gap so frame ids can never be mistaken for positions.
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('frames', 'id'), "
                             "greatest((SELECT coalesce(max(id), 0) FROM frames), "
                             "nextval(pg_get_serial_sequence('frames', 'id'))) + :gap)"), {"gap": ID_GAP})
    source_ids: list[int] = []
    frame_source: list[int] = []
    rows: list[FrameRow] = []
    per_source = -(-n // n_sources)
    for s in range(n_sources):
        source = upsert_source(db, uri=f"{uri_prefix}-{seed}-{s:04d}.mp4", kind="video",
                               tags={"city": city_of(s, n_sources), "number": str(s)})
        source_ids.append(source.id)
        for i in range(s * per_source, min(n, (s + 1) * per_source)):
            rows.append(FrameRow(source_id=source.id, frame_index=i, pts_seconds=i / 25.0,
                                 path=f"{uri_prefix}-{seed}-{s:04d}/{i:08d}.jpg", width=64, height=48,
                                 sha256=f"{i:064x}", keyframe_method="fps"))
            frame_source.append(s)
    load_frames(db, model.id, rows, stored)
    ids = _frame_ids(db, model, rows)
    cities = {int(frame_id): city_of(s, n_sources) for frame_id, s in zip(ids.tolist(), frame_source, strict=True)}
    return Corpus(model, ids, stored, queries, source_ids, cities, n_sources)


def add_frames(db: Database, corpus: Corpus, vectors: npt.NDArray[np.float32], *, source_number: int = 0,
               first_index: int = 1_000_000) -> npt.NDArray[np.int64]:
    """Append frames (with these vectors) to one of the corpus's sources; returns their ids."""
    source_id = corpus.source_ids[source_number]
    rows = [FrameRow(source_id=source_id, frame_index=first_index + i, pts_seconds=float(i),
                     path=f"/added/{first_index + i:08d}.jpg", width=64, height=48,
                     sha256=f"{first_index + i:064x}", keyframe_method="fps") for i in range(len(vectors))]
    load_frames(db, corpus.model.id, rows, vectors)
    ids = _frame_ids(db, corpus.model, rows)
    for frame_id in ids.tolist():
        corpus.cities[frame_id] = city_of(source_number, corpus.n_sources)
    corpus.ids = np.concatenate([corpus.ids, ids])
    corpus.vectors = np.vstack([corpus.vectors, vectors])
    return ids


def delete_frames(db: Database, frame_ids: npt.NDArray[np.int64] | list[int]) -> None:
    with db.transaction() as conn:
        conn.execute(sa.text("DELETE FROM frames WHERE id = ANY(:ids)"), {"ids": [int(i) for i in frame_ids]})


def _frame_ids(db: Database, model: StoredModel, rows: list[FrameRow]) -> npt.NDArray[np.int64]:
    """The ids the rows got, in the rows' order."""
    with db.transaction() as conn:
        found = dict(conn.execute(sa.text(
            "SELECT f.path, f.id FROM frames f JOIN embeddings e ON e.frame_id = f.id AND e.model_id = :m "
            "WHERE f.path = ANY(:paths)"), {"m": model.id, "paths": [row.path for row in rows]}).all())
    return np.array([found[row.path] for row in rows], dtype=np.int64)


def recall_at(found: list[int], truth: list[int]) -> float:
    """|found ∩ truth| / |truth| (1.0 when there is no truth to find)."""
    return len(set(found) & set(truth)) / len(truth) if truth else 1.0
