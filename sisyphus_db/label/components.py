"""Near-duplicate groups as connected components of a pair graph, vectorised (no loop over frames).

A group is a connected component of the pairs closer than the threshold, so near-duplicates
chain: a ~ b and b ~ c put a, b and c in one group even when a and c are further apart
(the stored distance to the representative shows how far such chains reach).

The representative of a group is its frame with the most near-duplicate partners (the
centre of the group), ties going to the lowest frame id (the earliest stored frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class Groups:
    """One entry per frame that has at least one near-duplicate, ordered by frame id."""

    frame_id: npt.NDArray[np.int64]
    group_id: npt.NDArray[np.int64]          # the representative's frame id
    is_representative: npt.NDArray[np.bool_]
    degree: npt.NDArray[np.int64]            # near-duplicate partners of the frame

    @property
    def frames(self) -> int:
        return int(self.frame_id.size)

    @property
    def groups(self) -> int:
        return int(np.count_nonzero(self.is_representative))


def duplicate_groups(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> Groups:
    """Connected components of the undirected pairs (a[i], b[i]) of frame ids; self-pairs ignored."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    keep = a != b
    a, b = a[keep], b[keep]
    if a.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return Groups(empty, empty.copy(), np.empty(0, dtype=bool), empty.copy())
    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    n, m = nodes.size, a.size
    lo = np.minimum(inverse[:m], inverse[m:])
    hi = np.maximum(inverse[:m], inverse[m:])
    # a -> b and b -> a are one pair: count each partner once.
    pairs = np.unique(lo * n + hi)
    lo, hi = pairs // n, pairs % n
    graph = sp.coo_matrix((np.ones(lo.size, dtype=np.int8), (lo, hi)), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)
    degree = np.bincount(lo, minlength=n) + np.bincount(hi, minlength=n)
    # Sort by component, then most partners first, then lowest id: each component's first is its representative.
    order = np.lexsort((nodes, -degree, component))
    firsts = order[np.r_[0, np.flatnonzero(np.diff(component[order])) + 1]]
    representative = np.empty(component.max() + 1, dtype=np.int64)
    representative[component[firsts]] = nodes[firsts]
    group_id = representative[component]
    return Groups(frame_id=nodes, group_id=group_id, is_representative=group_id == nodes,
                  degree=degree.astype(np.int64))
