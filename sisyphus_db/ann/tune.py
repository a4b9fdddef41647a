"""Build-time tuning: the cheapest nprobe and rerank depth that reach a target recall@10.

Protocol (kept the same everywhere so numbers are comparable):
- queries are `n_queries` stored vectors drawn with a seeded RNG;
- the query's own id is EXCLUDED on both sides: the ground truth is the exact top-10 of
  all other stored vectors, and the ANN candidate list drops the query's id (or its last
  candidate when the id was not found, so every depth holds the same number of slots);
- the ANN side fetches `rerank_k` candidates at a given nprobe, re-ranks them exactly
  with the full float vectors (as the search layer does with vectors from PostgreSQL)
  and keeps the top 10; recall@10 = |that ∩ ground truth| / 10, averaged.
Cost of a setting = nprobe * mean list length (codes scanned) + rerank_weight * rerank_k
(full vectors fetched and compared); among settings reaching the target the cheapest wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.ann.arrays import as_ids, as_vectors_or_half, rows_float32
from sisyphus_db.ann.search import exact_search, search
from sisyphus_db.errors import AnnIndexError

logger = logging.getLogger(__name__)

K = 10
RERANK_DEPTHS = (10, 20, 50, 100, 200, 500, 1000)

# Fetching one full vector from PostgreSQL and comparing it costs roughly as much as
# scanning a few hundred PQ codes in memory.
RERANK_WEIGHT = 256.0

_GATHER_CHUNK = 16  # queries per block when gathering candidate vectors (16 x 5,000 x 128-d float32: 41 MB)


@dataclass(frozen=True)
class TuneRow:
    nprobe: int
    rerank_k: int
    recall_at_10: float
    cost: float


@dataclass(frozen=True)
class TuneResult:
    """The chosen setting; reached=False means even the best setting missed the target."""

    nprobe: int | None
    rerank_k: int
    recall_at_10: float
    reached: bool
    table: list[TuneRow] = field(default_factory=list)
    seconds: float = 0.0


def _drop_self(found: npt.NDArray[np.int64], qids: npt.NDArray[np.int64]) -> (
    npt.NDArray[np.int64]
):
    """Remove each row's own id (or its last entry when absent): one column fewer."""
    mask = found == qids[:, None]
    missing = ~mask.any(axis=1)
    mask[missing, -1] = True
    return found[~mask].reshape(found.shape[0], found.shape[1] - 1)


def _rows_of(ids_sorted: npt.NDArray[np.int64], order: npt.NDArray[np.int64],
             wanted: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Row numbers of the wanted ids in the vectors array, -1 when unknown or -1."""
    pos = np.searchsorted(ids_sorted, wanted)
    pos = np.minimum(pos, ids_sorted.shape[0] - 1)
    ok = (ids_sorted[pos] == wanted) & (wanted >= 0)
    return np.where(ok, order[pos], -1)


def _candidate_sims(
    x: npt.NDArray[np.float32] | npt.NDArray[np.float16], qx: npt.NDArray[np.float32], rows: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Exact cosine similarity of each query to each of its candidates; -inf for holes."""
    sims = np.full(rows.shape, -np.inf, dtype=np.float32)
    for start in range(0, rows.shape[0], _GATHER_CHUNK):
        block = rows[start : start + _GATHER_CHUNK]
        vecs = rows_float32(x, np.maximum(block, 0))  # (b, D, d)
        s = np.einsum("bkd,bd->bk", vecs, qx[start : start + _GATHER_CHUNK])
        sims[start : start + _GATHER_CHUNK] = np.where(block >= 0, s, -np.inf)
    return sims


def _recall(
    sims: npt.NDArray[np.float32], cand: npt.NDArray[np.int64], depth: int,
    truth: npt.NDArray[np.int64],
) -> float:
    s = sims[:, :depth]
    kk = min(K, depth)
    top = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if depth > kk else np.arange(depth)[None]
    top = np.broadcast_to(top, (s.shape[0], kk))
    got = np.take_along_axis(cand[:, :depth], top, axis=1)
    got = np.where(np.take_along_axis(s, top, axis=1) > -np.inf, got, -2)
    hits = (got[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
    denom = np.maximum((truth >= 0).sum(axis=1), 1)
    return float(np.mean(hits.any(axis=2).sum(axis=1) / denom))


def tune(
    index: Any,
    vectors: npt.ArrayLike,
    ids: npt.ArrayLike,
    *,
    target_recall: float = 0.95,
    n_queries: int = 500,
    rerank_depths: Sequence[int] = RERANK_DEPTHS,
    nprobes: Sequence[int] | None = None,
    rerank_weight: float = RERANK_WEIGHT,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> TuneResult:
    """Measure the index against exact search on its own vectors; see the module doc.

    vectors/ids: everything stored in the index (the full vectors: float32, or float16 such as
    the memory-mapped refine store, read a block at a time).
    nprobes: values to try (default 1, 2, 4, ... up to nlist).
    progress: called with 1 after each nprobe value measured.
    """
    import faiss

    t0 = time.perf_counter()
    x = as_vectors_or_half(vectors, d=index.d)
    id_arr = as_ids(ids, x.shape[0])
    n = x.shape[0]
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return TuneResult(None, K, 1.0, True, [], time.perf_counter() - t0)
    if n < 2:
        raise AnnIndexError(f"cannot tune an index on {n} vectors")

    rng = np.random.default_rng(seed)
    qrows = rng.choice(n, size=min(n_queries, n), replace=False)
    qx, qids = rows_float32(x, qrows), id_arr[qrows]
    _, gt = exact_search(x, id_arr, qx, K + 1)
    truth = _drop_self(gt, qids)

    depths = sorted({d for d in rerank_depths if d >= 1 and d <= n - 1} or {min(K, n - 1)})
    fetch = depths[-1] + 1  # + 1: the query itself usually comes back first
    nlist = int(ivf.nlist)
    if nprobes is None:
        nprobes = [1 << i for i in range(nlist.bit_length()) if (1 << i) < nlist] + [nlist]
    list_len = int(index.ntotal) / max(nlist, 1)

    order = np.argsort(id_arr, kind="stable")
    ids_sorted = id_arr[order]
    table: list[TuneRow] = []
    best_cost = np.inf
    for nprobe in sorted(set(int(p) for p in nprobes)):
        if nprobe * list_len + rerank_weight * depths[0] >= best_cost:
            break  # even the shallowest rerank here costs more than the best found
        _, found = search(index, qx, fetch, nprobe=nprobe)
        cand = _drop_self(found, qids)
        sims = _candidate_sims(x, qx, _rows_of(ids_sorted, order, cand))
        for depth in depths:
            cost = nprobe * list_len + rerank_weight * depth
            if cost >= best_cost:
                break  # deeper is dearer still: nothing here can win any more
            row = TuneRow(nprobe, depth, _recall(sims, cand, depth, truth), cost)
            table.append(row)
            if row.recall_at_10 >= target_recall:
                best_cost = min(best_cost, cost)
                break  # deeper reranks at this nprobe only cost more
        if progress is not None:
            progress(1)

    seconds = time.perf_counter() - t0
    ok = [r for r in table if r.recall_at_10 >= target_recall]
    if ok:
        pick = min(ok, key=lambda r: (r.cost, r.nprobe))
    else:
        pick = max(table, key=lambda r: (r.recall_at_10, -r.cost))
        logger.warning(
            "recall@10 target %.3f not reached: best %.3f at nprobe=%d rerank_k=%d",
            target_recall, pick.recall_at_10, pick.nprobe, pick.rerank_k,
        )
    logger.info("tuned in %.1f s: nprobe=%d rerank_k=%d recall@10=%.3f", seconds, pick.nprobe,
                pick.rerank_k, pick.recall_at_10)
    return TuneResult(pick.nprobe, pick.rerank_k, pick.recall_at_10, bool(ok), table, seconds)
