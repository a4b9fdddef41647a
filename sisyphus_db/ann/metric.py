"""Cosine distance on unit vectors, the one distance this package reports.

Why METRIC_L2 and not inner product: for unit vectors ||x - y||^2 = 2 - 2 cos(x, y), so
L2 ranks exactly like cosine and converts exactly (cosine distance = L2^2 / 2). L2 is
faiss's native metric for k-means, residual PQ and the GPU kernels, whereas inner-product
IVF assigns vectors to unnormalised centroids, which is biased. The reported distance is
then the same as pgvector's `<=>` (1 - cosine similarity).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def l2sq_to_cosine(distances: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Squared L2 between unit vectors -> cosine distance, clipped to its range [0, 2].

    Clipping removes the tiny negatives float rounding (and PQ approximation) produce.
    """
    out = np.asarray(distances, dtype=np.float32) * np.float32(0.5)
    return np.clip(out, 0.0, 2.0, out=out)


def cosine_distances(
    queries: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """1 - q.v for every query (m, d) against every vector (n, d): shape (m, n)."""
    sims = np.asarray(queries, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T
    return np.clip(np.float32(1.0) - sims, 0.0, 2.0).astype(np.float32, copy=False)
