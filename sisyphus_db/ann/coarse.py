"""Two-level k-means for the coarse quantizer of a large IVF index on the CPU.

Flat k-means over `nlist` centroids costs n x nlist distances per iteration: at 1M frames
(4,096 lists, 262k training points, 10 iterations) it is over a minute of a 2-core CPU and
most of the build. Two levels cost about n x 2 sqrt(nlist) per iteration instead: first
sqrt(nlist) coarse groups, then each group's points clustered into its share of the lists
(shares in proportion to the group sizes). The centroids are slightly less even than
flat k-means'; the index's own tuning (nprobe and rerank depth for the target recall on
held-out vectors) absorbs the difference, and the benchmarks measure it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

TWO_LEVEL_MIN_NLIST = 1024  # below this, flat k-means takes seconds: keep it
NITER = 10                  # faiss's default for an IVF's coarse quantizer


def use_two_level(nlist: int, n_train: int) -> bool:
    return nlist >= TWO_LEVEL_MIN_NLIST and n_train >= 4 * nlist


def two_level_centroids(x: npt.NDArray[np.float32], nlist: int, *, seed: int = 0,
                        niter: int = NITER) -> npt.NDArray[np.float32]:
    """`nlist` centroids (nlist, d) for the training sample `x` (n, d)."""
    n, d = x.shape
    groups = max(2, round(math.sqrt(nlist)))
    first = _kmeans(x, groups, seed=seed, niter=niter)
    assignment = _nearest(first, x)
    sizes = np.bincount(assignment, minlength=groups)
    shares = _shares(sizes, nlist)
    centroids = np.empty((nlist, d), dtype=np.float32)
    at = 0
    for group in range(groups):
        share = int(shares[group])
        if share == 0:
            continue
        members = x[assignment == group]
        centroids[at:at + share] = (members.mean(axis=0, keepdims=True) if share == 1
                                    else _kmeans(members, share, seed=seed + 1 + group, niter=niter))
        at += share
    assert at == nlist
    return centroids


def _shares(sizes: npt.NDArray[np.int64], nlist: int) -> npt.NDArray[np.int64]:
    """Lists per group: in proportion to its points (largest remainders), never more than its points."""
    exact = sizes / max(1, int(sizes.sum())) * nlist
    shares = np.minimum(np.floor(exact).astype(np.int64), sizes)
    shares[(shares == 0) & (sizes > 0)] = 1
    while shares.sum() > nlist:  # the minimum of one list per group overshot
        shares[np.argmax(shares)] -= 1
    remainder = exact - shares
    while shares.sum() < nlist:
        room = np.where(shares < sizes, remainder, -np.inf)
        group = int(np.argmax(room))
        shares[group] += 1
        remainder[group] -= 1.0
    return shares


def _kmeans(x: npt.NDArray[np.float32], k: int, *, seed: int, niter: int) -> npt.NDArray[np.float32]:
    import faiss

    # The points were sampled already: no second subsampling, and no warning for ~64 per centroid.
    kmeans = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False,
                          max_points_per_centroid=max(256, x.shape[0] // k + 1), min_points_per_centroid=1)
    kmeans.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(kmeans.centroids, dtype=np.float32)


def _nearest(centroids: npt.NDArray[np.float32], x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    import faiss

    flat = faiss.IndexFlatL2(centroids.shape[1])
    flat.add(centroids)
    _, found = flat.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return found[:, 0].astype(np.int64)
