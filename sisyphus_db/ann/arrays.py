"""Checking the numpy arrays handed to the ANN layer, with one-line InputError messages."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.errors import InputError

# Embeddings are stored as halfvec, so a round trip moves a unit norm by ~1e-3.
NORM_TOLERANCE = 1e-2

# Norms are checked in chunks so a 1M x 2048 array does not need a second full copy.
_CHECK_CHUNK = 65_536

# float16 -> float32: numpy's own astype(float32) on float16 is scalar here (~28 ns a value);
# faiss's fp16 scalar quantizer decodes with the CPU's conversion instructions (~0.5 ns), and a
# 256 KiB lookup table (~1 ns, exact for every value) covers shapes it cannot take.
_F16_TO_F32 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _fp16_decoder(d: int) -> Any:
    import faiss

    return faiss.ScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16)


def to_float32(half: npt.NDArray[np.float16]) -> npt.NDArray[np.float32]:
    """Exact float32 copy of a float16 array (any shape), fast."""
    half = np.ascontiguousarray(half)
    if half.ndim == 0 or half.size == 0:
        return _F16_TO_F32[half.view(np.uint16)]
    import faiss

    out = np.empty(half.shape, dtype=np.float32)
    d = int(half.shape[-1])
    _fp16_decoder(d).decode_c(faiss.swig_ptr(half.view(np.uint8)), faiss.swig_ptr(out), half.size // d)
    return out


def as_vectors_or_half(vectors: npt.ArrayLike, *, d: int | None = None) -> npt.NDArray[np.float32] | npt.NDArray[np.float16]:
    """float16 vectors (e.g. a memory-mapped refine store) as they are, anything else as `as_vectors`.

    Code that takes either reads float16 rows a block at a time through `rows_float32`, so a
    build over a mapped store never holds a float32 copy of every vector.
    """
    if isinstance(vectors, np.ndarray) and vectors.dtype == np.float16:
        if vectors.ndim != 2:
            raise InputError(f"expected vectors with ndim 2, got ndim {vectors.ndim}")
        if d is not None and vectors.shape[1] != d:
            raise InputError(f"expected vectors of dimension {d}, got {vectors.shape[1]}")
        return vectors
    return as_vectors(vectors, d=d)


def rows_float32(vectors: npt.NDArray[np.float32] | npt.NDArray[np.float16],
                 rows: slice | npt.NDArray[np.int64] = slice(None)) -> npt.NDArray[np.float32]:
    """These rows (a slice or row numbers) as C-contiguous float32, converted when stored as float16."""
    part = vectors[rows]
    if part.dtype == np.float16:
        return to_float32(part)
    return np.ascontiguousarray(part, dtype=np.float32)


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


def check_unit_norm(vectors: npt.NDArray[np.float32] | npt.NDArray[np.float16]) -> None:
    """Refuse vectors that are not L2-normalised: cosine from L2 would be silently wrong."""
    for start in range(0, vectors.shape[0], _CHECK_CHUNK):
        chunk = rows_float32(vectors, slice(start, start + _CHECK_CHUNK))
        norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
        bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
        if bad.size:
            row = start + int(bad[0])
            raise InputError(
                f"vectors must be L2-normalised: row {row} has norm {float(norms[bad[0]]):.4f}"
            )
