"""All-pairs k-nearest-neighbour graph over the stored frames (near-duplicates, clusters,
label propagation), computed by bulk batched search on the index (GPU if it lives there)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.ann.arrays import as_ids, as_vectors
from sisyphus_db.ann.search import search
from sisyphus_db.errors import InputError

logger = logging.getLogger(__name__)

Edges = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]


def knn_graph(
    index: Any,
    vectors: npt.ArrayLike,
    ids: npt.ArrayLike,
    k: int,
    *,
    nprobe: int | None = None,
    batch_size: int = 4096,
    progress: Callable[[int], None] | None = None,
    refine: Any = None,
    depth: int | None = None,
) -> Edges:
    """Edges (src id, dst id, cosine distance) to the k nearest other frames of each frame.

    Each frame's own id is removed from its neighbours (k + 1 are fetched for that);
    missing neighbours (-1) are dropped, so a frame may have fewer than k edges.
    Edges are ordered by source (input order) then by distance.
    progress: called with the number of frames done after each batch.
    refine: a RefineStore (sisyphus_db.ann.refine): fetch `depth` ANN candidates per frame
      and keep the k + 1 nearest by exact distance over its float16 vectors (the
      distances are then exact too, not the codes' approximation).
    """
    x = as_vectors(vectors, d=index.d)
    id_arr = as_ids(ids, x.shape[0])
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    src_parts: list[npt.NDArray[np.int64]] = []
    dst_parts: list[npt.NDArray[np.int64]] = []
    dist_parts: list[npt.NDArray[np.float32]] = []
    for start in range(0, x.shape[0], batch_size):
        qids = id_arr[start : start + batch_size]
        if refine is not None:
            fetch = min(max(k + 1, depth or k + 1), int(index.ntotal))
            _, cand = search(index, x[start : start + batch_size], fetch, nprobe=nprobe)
            dist, found = refine.rerank(x[start : start + batch_size], cand, k + 1)
        else:
            dist, found = search(index, x[start : start + batch_size], k + 1, nprobe=nprobe)
        # drop self wherever it appears; otherwise drop the (k+1)-th neighbour
        self_mask = found == qids[:, None]
        no_self = ~self_mask.any(axis=1)
        self_mask[no_self, -1] = True
        keep = ~self_mask & (found >= 0)
        src_parts.append(np.broadcast_to(qids[:, None], found.shape)[keep])
        dst_parts.append(found[keep])
        dist_parts.append(dist[keep])
        if progress is not None:
            progress(qids.shape[0])
    if not src_parts:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), np.empty(0, dtype=np.float32)
    return (
        np.concatenate(src_parts),
        np.concatenate(dst_parts),
        np.concatenate(dist_parts).astype(np.float32, copy=False),
    )
