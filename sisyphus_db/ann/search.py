"""Approximate search on a faiss index, exact rerank and brute-force ground truth.

Every distance returned is cosine distance (1 - cosine similarity), like pgvector `<=>`;
missing results (fewer than k found) have id -1 and distance +inf.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.ann.arrays import as_vectors, as_vectors_or_half, rows_float32
from sisyphus_db.ann.device import is_gpu_index
from sisyphus_db.ann.metric import l2sq_to_cosine
from sisyphus_db.ann.params import apply_search_params, check_nprobe
from sisyphus_db.errors import AnnIndexError, InputError

logger = logging.getLogger(__name__)

Result = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


def _queries(queries: npt.ArrayLike, d: int) -> npt.NDArray[np.float32]:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    return as_vectors(q, d=d, name="queries")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _finish(distances: npt.NDArray[np.float32], ids: npt.NDArray[np.int64]) -> Result:
    out = l2sq_to_cosine(distances)
    out[ids < 0] = np.inf
    return out, ids.astype(np.int64, copy=False)


def _search_params(index: Any, nprobe: int | None, selector: Any) -> Any:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        if selector is None:
            return None
        params: Any = faiss.SearchParameters()
    else:
        params = faiss.SearchParametersIVF()
        # SearchParametersIVF defaults to nprobe=1, not to the index's nprobe: always set it.
        params.nprobe = nprobe or int(ivf.nprobe)
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            # An HNSW quantizer explores only efSearch centroids (16 by default): asked for more
            # lists than that, it returns poor ones, and recall stops rising with nprobe (0.93
            # at 10M whatever nprobe; 1.0 with efSearch >= nprobe).
            hnsw = faiss.SearchParametersHNSW()
            hnsw.efSearch = max(int(quantizer.hnsw.efSearch), 2 * int(params.nprobe))
            params.quantizer_params = hnsw
            params.referenced_objects = [hnsw]  # kept alive as long as params
    if selector is not None:
        params.sel = selector  # the caller keeps `selector` alive for the whole search
    return params


def search(
    index: Any,
    queries: npt.ArrayLike,
    k: int,
    *,
    nprobe: int | None = None,
    allowed_ids: npt.ArrayLike | None = None,
) -> Result:
    """k nearest stored frames per query: (cosine distances (m, k), frame ids (m, k)).

    nprobe: lists to probe (IVF only; default: the index's own nprobe). On a CPU index it
      is passed per call and does not change the index, so concurrent searches are safe.
    allowed_ids: restrict results to these frame ids (a selective SQL filter). When k
      allowed ids exist but the probed lists hold fewer, nprobe is widened (x4 up to all
      lists) for the short queries, so the result fills k whenever it can.
    """
    import faiss

    q = _queries(queries, index.d)
    k = _check_k(k)
    nprobe = check_nprobe(index, nprobe)

    if is_gpu_index(index):
        if allowed_ids is not None:
            raise AnnIndexError("allowed_ids needs a CPU index: GPU faiss has no id selectors")
        if nprobe is not None:
            apply_search_params(index, nprobe=nprobe)
        distances, ids = index.search(q, k)
        return _finish(distances, ids)

    selector = None
    n_allowed = 0
    if allowed_ids is not None:
        allowed = np.unique(np.ascontiguousarray(allowed_ids, dtype=np.int64).ravel())
        n_allowed = int(allowed.size)
        if n_allowed == 0:
            return np.full((q.shape[0], k), np.inf, np.float32), np.full((q.shape[0], k), -1)
        # IDSelectorBatch: hash set + bloom filter, O(1) per test (IDSelectorArray is linear)
        selector = faiss.IDSelectorBatch(allowed)

    distances, ids = index.search(q, k, params=_search_params(index, nprobe, selector))

    ivf = faiss.try_extract_index_ivf(index)
    if selector is not None and ivf is not None:
        want = min(k, n_allowed, int(index.ntotal))
        probe = nprobe or int(ivf.nprobe)
        short = np.flatnonzero((ids >= 0).sum(axis=1) < want)
        while short.size and probe < ivf.nlist:
            probe = min(int(ivf.nlist), probe * 4)
            logger.debug("%d queries short of %d allowed results: nprobe -> %d", short.size,
                         want, probe)
            params = _search_params(index, probe, selector)
            distances[short], ids[short] = index.search(q[short], k, params=params)
            short = short[(ids[short] >= 0).sum(axis=1) < want]
    return _finish(distances, ids)


def exact_rerank(
    query: npt.ArrayLike,
    candidate_ids: npt.ArrayLike,
    candidate_vectors: npt.ArrayLike,
    k: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Re-order ANN candidates by exact cosine distance with their full vectors.

    Candidates with id -1 (ANN padding) are dropped; ties break by smaller id so the
    order is deterministic. Returns at most k (ids, cosine distances).
    """
    k = _check_k(k)
    cand_ids = np.asarray(candidate_ids, dtype=np.int64).ravel()
    vecs = as_vectors(candidate_vectors, name="candidate_vectors")
    if vecs.shape[0] != cand_ids.shape[0]:
        raise InputError(
            f"expected one candidate vector per id, got {vecs.shape[0]} for {cand_ids.shape[0]}"
        )
    q = np.asarray(query, dtype=np.float32).ravel()
    if q.shape[0] != vecs.shape[1]:
        raise InputError(f"expected a query of dimension {vecs.shape[1]}, got {q.shape[0]}")
    keep = cand_ids >= 0
    cand_ids, vecs = cand_ids[keep], vecs[keep]
    dist = np.clip(np.float32(1.0) - vecs @ q, 0.0, 2.0).astype(np.float32)
    order = np.lexsort((cand_ids, dist))[:k]
    return cand_ids[order], dist[order]


EXACT_BLOCK_BYTES = 64 << 20  # float16 rows are converted to float32 and compared this much at a time


def exact_search(
    vectors: npt.ArrayLike, ids: npt.ArrayLike, queries: npt.ArrayLike, k: int
) -> Result:
    """Brute-force ground truth: (cosine distances (m, k), ids (m, k)), -1/inf padding.

    float16 vectors (a memory-mapped refine store) are compared a block of rows at a time,
    so no float32 copy of them all is made.
    """
    import faiss

    x = as_vectors_or_half(vectors)
    id_arr = np.asarray(ids, dtype=np.int64).ravel()
    if id_arr.shape[0] != x.shape[0]:
        raise InputError(f"expected {x.shape[0]} ids, one per vector, got {id_arr.shape[0]}")
    q = _queries(queries, x.shape[1])
    k = _check_k(k)
    kk = min(k, x.shape[0])
    sims = np.full((q.shape[0], 0), -np.inf, dtype=np.float32)
    pos = np.full((q.shape[0], 0), -1, dtype=np.int64)
    step = x.shape[0] if x.dtype == np.float32 else max(1, EXACT_BLOCK_BYTES // (4 * x.shape[1]))
    for start in range(0, x.shape[0], step):
        block = rows_float32(x, slice(start, start + step))
        # exact inner product = cosine similarity on unit vectors; faiss blocks and threads it
        s, p = faiss.knn(q, block, min(kk, block.shape[0]), metric=faiss.METRIC_INNER_PRODUCT)
        sims, pos = _best(np.hstack([sims, s]), np.hstack([pos, np.where(p >= 0, p + start, -1)]), kk)
    dist = np.full((q.shape[0], k), np.inf, dtype=np.float32)
    out = np.full((q.shape[0], k), -1, dtype=np.int64)
    valid = pos >= 0
    dist[:, :kk] = np.where(valid, np.clip(1.0 - sims, 0.0, 2.0), np.inf)
    out[:, :kk] = np.where(valid, id_arr[np.maximum(pos, 0)], -1)
    return dist, out


def _best(sims: npt.NDArray[np.float32], pos: npt.NDArray[np.int64], k: int) -> (
        tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]):
    """Each row's k most similar (row position breaks ties), most similar first."""
    if sims.shape[1] > k:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        sims, pos = np.take_along_axis(sims, part, axis=1), np.take_along_axis(pos, part, axis=1)
    order = np.lexsort((pos, -sims), axis=1)
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(pos, order, axis=1)
