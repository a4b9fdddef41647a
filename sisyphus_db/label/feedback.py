"""Relevance feedback arithmetic: query vectors, rank fusion and a small linear model, in memory.

Everything here works on the labelled examples and the ANN candidates only (a few hundred
vectors at most), never on the corpus: discover's cost must not grow with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

# Rocchio's classic weights (Rocchio 1971; Manning et al., IR book ch. 9): the positives'
# centroid, pushed away from the negatives' by a smaller weight so a few negatives steer
# the query without overturning it.
ROCCHIO_BETA = 1.0
ROCCHIO_GAMMA = 0.5
# Reciprocal-rank fusion constant (Cormack et al. 2009): 60 damps the very top ranks.
RRF_K = 60.0
# Average query expansion (Chum et al. 2007): the query plus its top results, weighted.
EXPAND_TOP = 5
EXPAND_WEIGHT = 0.5


def unit(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 and np.isfinite(norm) else vector.astype(np.float32)


def rocchio(positives: Vectors, negatives: Vectors, *, beta: float = ROCCHIO_BETA,
            gamma: float = ROCCHIO_GAMMA) -> npt.NDArray[np.float32]:
    """beta * mean(positives) - gamma * mean(negatives), unit length."""
    query = beta * unit(positives.mean(axis=0))
    if len(negatives):
        query = query - gamma * unit(negatives.mean(axis=0))
    out = unit(query)
    # Negatives that cancel the positives exactly leave no direction: fall back to the positives.
    return out if float(np.linalg.norm(out)) > 0.5 else unit(positives.mean(axis=0))


def spread_queries(positives: Vectors, limit: int) -> list[int]:
    """At most `limit` positives that cover their looks: farthest-point sampling from the newest.

    Several looks of one rare class (a cone by day, a barrier at night) each keep a query
    of their own, and the number of ANN searches stays bounded however many positives there are.
    """
    n = len(positives)
    if n <= limit:
        return list(range(n))
    chosen = [n - 1]
    nearest = 1.0 - positives @ positives[n - 1]
    for _ in range(limit - 1):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, 1.0 - positives @ positives[pick])
    return chosen


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], *, k: float = RRF_K) -> list[tuple[int, float]]:
    """Merge ranked id lists: score(id) = sum over lists of 1 / (k + rank); best first, ties by id."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, frame_id in enumerate(ranking, start=1):
            scores[frame_id] = scores.get(frame_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def expanded_query(positives: Vectors, top: Vectors, negatives: Vectors, *,
                   weight: float = EXPAND_WEIGHT) -> npt.NDArray[np.float32]:
    """Rocchio's query with the top results as weighted pseudo-positives (average query expansion).

    The negatives push the expanded query as they push Rocchio's; expanding after the push
    would pull it back toward whatever the negatives share with the positives.
    """
    centre = unit(positives.mean(axis=0))
    if len(top):
        centre = unit(centre + weight * unit(top.mean(axis=0)))
    if not len(negatives):
        return centre
    out = unit(ROCCHIO_BETA * centre - ROCCHIO_GAMMA * unit(negatives.mean(axis=0)))
    return out if float(np.linalg.norm(out)) > 0.5 else centre


def train_logistic(x: Vectors, y: npt.NDArray[np.float32], *, l2: float = 1e-3, steps: int = 300,
                   lr: float = 4.0) -> tuple[npt.NDArray[np.float64], float]:
    """An L2-regularised logistic regression, classes weighted to equal mass, by gradient descent.

    A few hundred examples of unit vectors: full-batch gradient descent converges in a few
    hundred steps in milliseconds, and needs nothing beyond numpy.
    """
    x64 = x.astype(np.float64)
    y64 = y.astype(np.float64)
    n_pos = max(float(y64.sum()), 1.0)
    n_neg = max(float(len(y64) - y64.sum()), 1.0)
    sample_weight = np.where(y64 > 0.5, 0.5 / n_pos, 0.5 / n_neg)
    w = np.zeros(x64.shape[1])
    b = 0.0
    for _ in range(steps):
        p = _sigmoid(x64 @ w + b)
        error = (p - y64) * sample_weight
        w -= lr * (x64.T @ error + l2 * w)
        b -= lr * float(error.sum())
    return w, b


def predict_logistic(model: tuple[npt.NDArray[np.float64], float], x: Vectors) -> npt.NDArray[np.float64]:
    w, b = model
    return _sigmoid(x.astype(np.float64) @ w + b)


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
