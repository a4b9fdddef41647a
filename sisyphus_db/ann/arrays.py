"""Checking the numpy arrays handed to the ANN layer, with one-line InputError messages."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sisyphus_db.errors import InputError

# Embeddings are stored as halfvec, so a round trip moves a unit norm by ~1e-3.
NORM_TOLERANCE = 1e-2

# Norms are checked in chunks so a 1M x 2048 array does not need a second full copy.
_CHECK_CHUNK = 65_536


def as_vectors(vectors: npt.ArrayLike, *, d: int | None = None, name: str = "vectors") -> (
    npt.NDArray[np.float32]
):
    """A C-contiguous float32 (n, d) array (faiss needs exactly that)."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(f"expected {name} with ndim 2, got ndim {arr.ndim}")
    if d is not None and arr.shape[1] != d:
        raise InputError(f"expected {name} of dimension {d}, got {arr.shape[1]}")
    return arr


def as_ids(ids: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    """Frame ids as int64 (n,), non-negative (-1 means 'no result') and unique."""
    arr = np.ascontiguousarray(ids, dtype=np.int64)
    if arr.ndim != 1:
        raise InputError(f"expected ids with ndim 1, got ndim {arr.ndim}")
    if arr.shape[0] != n:
        raise InputError(f"expected {n} ids, one per vector, got {arr.shape[0]}")
    if n and int(arr.min()) < 0:
        raise InputError(f"ids must be non-negative frame ids, got {int(arr.min())}")
    if n and np.unique(arr).shape[0] != n:
        raise InputError(f"ids must be unique, got {n - np.unique(arr).shape[0]} duplicates")
    return arr


def check_unit_norm(vectors: npt.NDArray[np.float32]) -> None:
    """Refuse vectors that are not L2-normalised: cosine from L2 would be silently wrong."""
    for start in range(0, vectors.shape[0], _CHECK_CHUNK):
        chunk = vectors[start : start + _CHECK_CHUNK]
        norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
        bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
        if bad.size:
            row = start + int(bad[0])
            raise InputError(
                f"vectors must be L2-normalised: row {row} has norm {float(norms[bad[0]]):.4f}"
            )
