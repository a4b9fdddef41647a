"""Training and filling a faiss index whose ids are frame ids, and updating it in place."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.ann.arrays import (
    as_ids,
    as_vectors,
    as_vectors_or_half,
    check_unit_norm,
    rows_float32,
)
from sisyphus_db.ann.device import is_gpu_index, resolve_faiss_device, to_cpu, to_gpu
from sisyphus_db.ann.factory import MIN_POINTS_PER_LIST, _first_line, validate_factory
from sisyphus_db.errors import AnnIndexError, InputError

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]

ADD_BATCH = 65_536

# k-means gains little beyond ~64 points per list and its cost grows linearly with them.
TRAIN_POINTS_PER_LIST = 64

# PQ codebooks (256 centroids per sub-quantizer) want ~2^16 points whatever nlist is.
PQ_MIN_TRAIN = 1 << 16

# centroids an HNSW quantizer explores to assign a vector to its list (faiss's default is 16)
HNSW_ASSIGN_EF = 64


def default_train_size(n: int, nlist: int | None, has_pq: bool) -> int:
    """How many vectors to train on: enough for k-means and the PQ codebooks, not more."""
    if nlist is None and not has_pq:
        return 0
    want = max(TRAIN_POINTS_PER_LIST * (nlist or 0), MIN_POINTS_PER_LIST * (nlist or 0))
    if has_pq:
        want = max(want, PQ_MIN_TRAIN)
    return min(n, want)


def is_ivf(index: Any) -> bool:
    import faiss

    return faiss.try_extract_index_ivf(index) is not None


def _new_index(factory: str, d: int) -> Any:
    import faiss

    index = faiss.index_factory(d, factory, faiss.METRIC_L2)
    if faiss.try_extract_index_ivf(index) is None and not factory.startswith("IDMap"):
        # Flat, HNSW & co. cannot store arbitrary ids themselves; IDMap2 keeps them and
        # can also reconstruct by id.
        index = faiss.index_factory(d, "IDMap2," + factory, faiss.METRIC_L2)
    for part in (index, faiss.try_extract_index_ivf(index)):
        concrete: Any = faiss.downcast_index(part) if part is not None else None
        if concrete is not None and hasattr(concrete, "do_polysemous_training"):
            # factory PQ defaults to polysemous training (code permutations for Hamming
            # filtering): minutes of CPU for a search mode we never use (no `ht`).
            concrete.do_polysemous_training = False
    return index


def _add_batched(
    index: Any,
    vectors: npt.NDArray[np.float32] | npt.NDArray[np.float16],
    ids: npt.NDArray[np.int64],
    batch_size: int,
    progress: Progress | None,
) -> None:
    for start in range(0, vectors.shape[0], batch_size):
        stop = min(start + batch_size, vectors.shape[0])
        try:
            index.add_with_ids(rows_float32(vectors, slice(start, stop)), ids[start:stop])
        except RuntimeError as exc:
            raise AnnIndexError(f"faiss could not add vectors: {_first_line(exc)}") from exc
        if progress is not None:
            progress(stop - start)


def build_index(
    vectors: npt.ArrayLike,
    ids: npt.ArrayLike,
    *,
    factory: str,
    train_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    batch_size: int = ADD_BATCH,
    progress: Progress | None = None,
) -> Any:
    """Train on a seeded sample, then add every vector (training ones too) under its id.

    vectors: (n, d) unit vectors, float32, or float16 (e.g. the memory-mapped refine store: the
      training sample and each added batch are converted on the way, never all of it);
    ids: (n,) unique non-negative frame ids.
    train_size: vectors to train on (default: `default_train_size`).
    progress: called with the number of vectors added after each batch.
    Returns a CPU index (a GPU build is copied back), ntotal == n.
    """
    x = as_vectors_or_half(vectors)
    n, d = x.shape
    id_arr = as_ids(ids, n)
    if n == 0:
        raise InputError("cannot build an index from 0 vectors")
    check_unit_norm(x)
    where = resolve_faiss_device(device)

    index = _new_index(factory, d)
    needs_training = not index.is_trained
    if needs_training:
        # validate against the sample size actually used, not against n
        spec0 = validate_factory(factory, n, d)
        size = train_size or default_train_size(n, spec0.nlist, spec0.pq_m is not None)
        size = min(size, n)
        validate_factory(factory, size, d)
    else:
        size = 0

    if where == "cuda" and is_ivf(index):
        index = to_gpu(index)
    elif where == "cuda":
        logger.info("%s needs no training; building it on the CPU", factory)

    t0 = time.perf_counter()
    if needs_training:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, size=size, replace=False)) if size < n else None
        sample = rows_float32(x) if rows is None else rows_float32(x, rows)
        try:
            _train_coarse_two_level(index, sample, where, seed)
            index.train(sample)
        except RuntimeError as exc:
            raise AnnIndexError(f"faiss could not train {factory}: {_first_line(exc)}") from exc
        logger.info("trained %s on %d vectors in %.1f s", factory, size, time.perf_counter() - t0)

    t1 = time.perf_counter()
    _add_batched(index, x, id_arr, batch_size, progress)
    logger.info("added %d vectors in %.1f s", n, time.perf_counter() - t1)
    return to_cpu(index)


def _train_coarse_two_level(index: Any, sample: npt.NDArray[np.float32], where: str, seed: int) -> None:
    """Fill a large IVF's empty flat quantizer with two-level k-means centroids (the CPU's
    fast path, sisyphus_db.ann.coarse); `index.train` then sees a trained quantizer and trains
    only the codes. A GPU trains flat k-means fast enough: left to faiss."""
    import faiss

    from sisyphus_db.ann.coarse import two_level_centroids, use_two_level

    ivf = faiss.try_extract_index_ivf(index)
    if where == "cuda" or ivf is None or not use_two_level(int(ivf.nlist), sample.shape[0]):
        return
    quantizer = ivf.quantizer  # flat or HNSW: either is filled by adding the centroids
    if not quantizer.is_trained or quantizer.ntotal != 0:
        return
    t0 = time.perf_counter()
    quantizer.add(two_level_centroids(sample, int(ivf.nlist), seed=seed))
    hnsw = faiss.downcast_index(quantizer)
    if isinstance(hnsw, faiss.IndexHNSW):
        # vectors are added to the list the quantizer finds: explore enough centroids to find the nearest
        hnsw.hnsw.efSearch = max(int(hnsw.hnsw.efSearch), HNSW_ASSIGN_EF)
    logger.info("two-level k-means for %d lists in %.1f s", ivf.nlist, time.perf_counter() - t0)


def add_vectors(
    index: Any,
    vectors: npt.ArrayLike,
    ids: npt.ArrayLike,
    *,
    batch_size: int = ADD_BATCH,
    progress: Progress | None = None,
) -> int:
    """Add new frames to a trained index without retraining; returns the number added.

    Ids already in the index are refused: faiss would silently store them twice.
    """
    x = as_vectors(vectors, d=index.d)
    id_arr = as_ids(ids, x.shape[0])
    if x.shape[0] == 0:
        return 0
    check_unit_norm(x)
    if not index.is_trained:
        raise AnnIndexError("the index is not trained: build it with `sisyphus index build`")
    present = np.intersect1d(index_ids(index), id_arr, assume_unique=True)
    if present.size:
        raise InputError(
            f"{present.size} ids are already in the index (first: {int(present[0])}): "
            "remove them before adding"
        )
    _add_batched(index, x, id_arr, batch_size, progress)
    return int(x.shape[0])


def remove_ids(index: Any, ids: npt.ArrayLike) -> int:
    """Remove frames by id; returns how many were actually stored and removed."""
    import faiss

    id_arr = np.ascontiguousarray(ids, dtype=np.int64).ravel()
    if id_arr.size == 0:
        return 0
    if is_gpu_index(index):
        raise AnnIndexError("remove ids from the CPU copy of the index (see ann.device.to_cpu)")
    try:
        return int(index.remove_ids(faiss.IDSelectorBatch(id_arr)))
    except RuntimeError as exc:
        raise AnnIndexError(f"faiss could not remove ids: {_first_line(exc)}") from exc


def index_ids(index: Any) -> npt.NDArray[np.int64]:
    """Every id stored in the index, sorted (for `sisyphus index verify`)."""
    import faiss

    index = to_cpu(index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        invlists: Any = ivf.invlists
        parts: list[npt.NDArray[np.int64]] = []
        for list_no in range(ivf.nlist):
            size = invlists.list_size(list_no)
            if size == 0:
                continue
            ptr = invlists.get_ids(list_no)
            # copy before release: on-disk inverted lists may free the buffer
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
            invlists.release_ids(list_no, ptr)
        out = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    elif hasattr(index, "id_map"):
        out = faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    else:
        raise AnnIndexError(f"cannot list the ids of a {type(index).__name__} index")
    return np.sort(out)
