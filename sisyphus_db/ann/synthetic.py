"""Clustered unit vectors that look like CNN embeddings, for tests and benchmarks.

Uniform random vectors are a poor test of an ANN index (every neighbour is about as far
as every other); real embeddings form clusters of very unequal size (common scenes) with
a long tail of small ones (rare scenes). We draw cluster sizes from a log-normal, put each
point at its centre plus isotropic noise, and normalise.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from sisyphus_db.errors import InputError

_CHUNK = 65_536


def clustered_vectors(
    n: int,
    d: int,
    *,
    n_clusters: int | None = None,
    spread: float = 0.6,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """n unit float32 vectors of dimension d in n_clusters (default ~sqrt(n)) clusters.

    spread: noise norm relative to the unit centre; 0.6 puts a point at cosine ~0.85 to
    its centre, close to how far two crops of similar scenes sit in CNN feature space.
    Generated in chunks, so 1M x 256 needs only the output array (~1 GB) and a few s.
    """
    if n < 0 or d < 1:
        raise InputError(f"cannot generate {n} vectors of dimension {d}")
    if spread < 0:
        raise InputError(f"spread must be non-negative, got {spread}")
    clusters = n_clusters or max(1, int(math.sqrt(max(n, 1))))
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(mean=0.0, sigma=1.0, size=clusters)
    weights /= weights.sum()
    out = np.empty((n, d), dtype=np.float32)
    noise_scale = np.float32(spread / math.sqrt(d))  # noise norm ~ spread
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        labels = rng.choice(clusters, size=stop - start, p=weights)
        chunk = rng.standard_normal((stop - start, d), dtype=np.float32)
        chunk *= noise_scale
        chunk += centres[labels]
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start:stop] = chunk
    return out
