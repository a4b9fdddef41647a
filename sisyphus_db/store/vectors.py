"""Reading vectors back out of PostgreSQL: all of a model's (binary COPY), or some by id."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from sisyphus_db.db.database import Database

IdsAndVectors = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


def model_vectors(
    db: Database,
    model_id: int,
    dim: int,
    *,
    above_id: int = 0,
    progress: Callable[[int], None] | None = None,
) -> IdsAndVectors:
    """Every (frame id, vector) of a model with frame id > above_id, in frame-id order."""
    with db.copy_connection() as conn:
        count = conn.execute(
            "SELECT count(*) FROM embeddings WHERE model_id = %s AND frame_id > %s", (model_id, above_id)
        ).fetchone()
        n = int(count[0]) if count else 0
        ids = np.empty(n, dtype=np.int64)
        vectors = np.empty((n, dim), dtype=np.float32)
        row = 0
        query = (
            "COPY (SELECT frame_id, vec FROM embeddings WHERE model_id = "
            f"{int(model_id)} AND frame_id > {int(above_id)} ORDER BY frame_id) TO STDOUT (FORMAT BINARY)"
        )
        with conn.cursor().copy(query) as copy:
            copy.set_types(["bigint", "halfvec"])
            for frame_id, vec in copy.rows():
                if row >= n:
                    break  # rows added since the count belong to the next update
                ids[row] = frame_id
                vectors[row] = vec.to_numpy()
                row += 1
                if progress is not None and row % 10_000 == 0:
                    progress(10_000)
    if progress is not None and row % 10_000:
        progress(row % 10_000)
    return ids[:row], vectors[:row]


def vectors_by_id(db: Database, model_id: int, dim: int, frame_ids: Sequence[int] | npt.NDArray[np.int64]) -> IdsAndVectors:
    """The vectors of these frames under a model; frames that are gone are left out."""
    wanted = np.unique(np.asarray(frame_ids, dtype=np.int64))
    wanted = wanted[wanted >= 0]
    if wanted.size == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, dim), dtype=np.float32)
    with db.copy_connection() as conn:
        rows = conn.execute(
            "SELECT frame_id, vec FROM embeddings WHERE model_id = %s AND frame_id = ANY(%s)",
            (model_id, wanted.tolist()),
        ).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.empty((len(rows), dim), dtype=np.float32)
    for i, (_, vec) in enumerate(rows):
        vectors[i] = vec.to_numpy()
    return ids, vectors


def frame_ids_of_model(db: Database, model_id: int) -> npt.NDArray[np.int64]:
    with db.copy_connection() as conn:
        rows = conn.execute("SELECT frame_id FROM embeddings WHERE model_id = %s ORDER BY frame_id", (model_id,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)
