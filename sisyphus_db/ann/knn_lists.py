"""All-frames k-NN graph by inverted list: dense exact blocks instead of one ANN search per frame.

Searching every stored frame as a query (ann.knn) costs n ANN searches plus a rerank of
each one's candidates. When the queries ARE the stored vectors, an IVF index already says
who lives near whom: for each inverted list L, every member of L is compared exactly with
every member of the `nprobe` lists whose centroids are nearest to L's centroid (L itself
first). That is one faiss.knn per list over the refine store's float16 vectors (blocked BLAS
products and a C++ heap per row, all cores), exact distances and no PQ approximation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.ann.refine import RefineStore, to_float32
from sisyphus_db.errors import InputError

Edges = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]


def list_members(index: Any) -> list[npt.NDArray[np.int64]]:
    """The frame ids stored in each inverted list of an IVF index."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    invlists: Any = ivf.invlists
    out: list[npt.NDArray[np.int64]] = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size == 0:
            out.append(np.empty(0, dtype=np.int64))
            continue
        ptr = invlists.get_ids(list_no)
        out.append(faiss.rev_swig_ptr(ptr, size).copy().astype(np.int64))
        invlists.release_ids(list_no, ptr)
    return out


def knn_graph_by_lists(index: Any, store: RefineStore, k: int, *, nprobe: int,
                       live_ids: npt.NDArray[np.int64] | None = None,
                       progress: Callable[[int], None] | None = None,
                       lists: range | None = None) -> Edges:
    """Edges (src, dst, cosine distance) to the k nearest other frames of every frame in the index.

    live_ids: sorted frame ids that still exist; others are neither sources nor targets.
    lists: only the members of these inverted lists are sources (a share of the work, e.g. one
      Ray task's: sisyphus_db.distributed.knn_job); their neighbours still come from every list.
    Edges come grouped by source, nearest first.
    """
    import faiss

    if isinstance(k, bool) or int(k) != k or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    ivf = faiss.extract_index_ivf(index)
    members = list_members(index)
    if live_ids is not None:
        # one membership test for all lists: per list, np.isin against every live id costs
        # O(n log n) each time (hours at 10M frames and 16k lists)
        sizes = np.fromiter((m.size for m in members), dtype=np.int64, count=len(members))
        every = np.concatenate(members) if members else np.empty(0, dtype=np.int64)
        alive = np.isin(every, live_ids)
        # live members per list from a running count (np.add.reduceat fails on empty lists at the end)
        running = np.r_[0, np.cumsum(alive)]
        ends = np.cumsum(sizes)
        kept = running[ends] - running[ends - sizes]
        bounds = np.r_[0, np.cumsum(kept)]
        every = every[alive]
        members = [every[bounds[i]:bounds[i + 1]] for i in range(len(members))]
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    probe = max(1, min(int(nprobe), ivf.nlist))
    _, near = faiss.knn(centroids, centroids, probe)
    src_parts: list[npt.NDArray[np.int64]] = []
    dst_parts: list[npt.NDArray[np.int64]] = []
    dist_parts: list[npt.NDArray[np.float32]] = []
    for list_no in lists if lists is not None else range(ivf.nlist):
        own = members[list_no]
        if own.size == 0:
            continue
        others = [int(j) for j in near[list_no] if j != list_no and j >= 0][:probe - 1]
        cand_ids = np.concatenate([own, *[members[j] for j in others]])
        rows = store.rows_of(cand_ids)
        if (rows < 0).any():  # not in the store (should not happen after a build/update): leave out
            keep = rows >= 0
            own = own[keep[:own.size]]
            cand_ids, rows = cand_ids[keep], rows[keep]
        cand = to_float32(store.vectors[rows])
        kk = min(k + 1, cand_ids.size)
        # faiss.knn: blocked BLAS inner products + a C++ heap per row, on all cores
        sims, pos = faiss.knn(cand[:own.size], cand, kk, metric=faiss.METRIC_INNER_PRODUCT)
        found = np.where(pos >= 0, cand_ids[np.maximum(pos, 0)], -1)
        self_mask = found == own[:, None]
        self_mask[~self_mask.any(axis=1), -1] = True  # self not among them: drop the (k+1)-th instead
        valid = ~self_mask & (found >= 0)
        if kk <= k:  # fewer candidates than k + 1: every other one is a neighbour
            valid = (found != own[:, None]) & (found >= 0)
        src_parts.append(np.broadcast_to(own[:, None], found.shape)[valid])
        dst_parts.append(found[valid])
        dist_parts.append(np.clip(1.0 - sims[valid], 0.0, 2.0).astype(np.float32))
        if progress is not None:
            progress(int(own.size))
    if not src_parts:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), np.empty(0, dtype=np.float32)
    src = np.concatenate(src_parts)
    order = np.argsort(src, kind="stable")  # grouped by source for the rank column
    return src[order], np.concatenate(dst_parts)[order], np.concatenate(dist_parts)[order]
