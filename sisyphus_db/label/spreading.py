"""Label spreading (Zhou et al., "Learning with Local and Global Consistency", NIPS 2003) on a sparse graph.

With W the symmetric affinity matrix of the k-NN graph, D its degrees and
S = D^-1/2 W D^-1/2, the scores F solve F = alpha S F + (1 - alpha) Y, i.e.
F* = (1 - alpha) (I - alpha S)^-1 Y, where Y is +1 on positive seeds, -1 on negative seeds
and 0 elsewhere. Everything is a scipy.sparse operation over arrays: no Python loop over
frames, so 1M frames x 10 neighbours is a few hundred sparse mat-vecs.

Two solvers reach the same fixed point:
- "cg": conjugate gradients on (I - alpha S) F = (1 - alpha) Y (symmetric positive definite,
  eigenvalues in [1 - alpha, 1 + alpha]): ~sqrt((1 + alpha) / (1 - alpha)) times fewer steps;
- "iterate": Zhou's iteration F <- alpha S F + (1 - alpha) Y, whose error shrinks by alpha
  per step (about 1,400 steps to 1e-6 at alpha 0.99).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sisyphus_db.errors import InputError

Solver = Literal["cg", "iterate"]
SOLVERS: tuple[str, ...] = ("cg", "iterate")
# Zhou et al. use 0.99; on the demo (benchmarks/results/labelling.md) 0.8-0.9 found the remaining
# road works after one review round 2x faster than 0.99, which spreads too far along a continuous video.
DEFAULT_ALPHA = 0.9
DEFAULT_TOL = 1e-6
DEFAULT_MAX_ITER = 5000


@dataclass(frozen=True)
class SpreadResult:
    scores: npt.NDArray[np.float64]  # F, one per node
    iterations: int
    converged: bool
    residual: float                   # relative residual (cg) or last relative change (iterate)
    sigma: float                      # the kernel width used for the edge weights


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
        raise InputError(f"--alpha must be strictly between 0 and 1, got {alpha}")
    return float(alpha)


def affinity(n: int, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64],
             distances: npt.NDArray[np.floating], sigma: float | None = None) -> tuple[sp.csr_matrix, float]:
    """Symmetric Gaussian affinities w = exp(-(d / sigma)^2) over the edges (node indexes 0..n-1).

    sigma defaults to the median positive edge distance, so the weights do not depend on the
    model's distance scale. The k-NN relation is not symmetric; an edge in either direction
    connects the pair (W = max(W, W^T)), as in Zhou et al. Self-loops are dropped.
    """
    d = np.asarray(distances, dtype=np.float64)
    if sigma is None:
        positive = d[d > 0]
        sigma = float(np.median(positive)) if positive.size else 1.0
    if not sigma > 0:
        raise InputError(f"the kernel width sigma must be positive, got {sigma}")
    keep = rows != cols
    r = np.asarray(rows)[keep].astype(np.int64)
    c = np.asarray(cols)[keep].astype(np.int64)
    weights = np.exp(-np.square(d[keep] / sigma))
    # Both directions of every edge, sorted by (row, col); a pair listed more than once (in either
    # direction) keeps its largest weight: W = max(W, W^T) without building W^T. The sorted keys give
    # the CSR arrays directly.
    key = np.concatenate([r * n + c, c * n + r])
    both = np.concatenate([weights, weights])
    order = np.argsort(key)  # ties need no order: their maximum is taken
    key, both = key[order], both[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.empty(0, dtype=np.int64)
    data = np.maximum.reduceat(both, starts) if key.size else both
    unique = key[starts]
    indptr = np.r_[0, np.cumsum(np.bincount(unique // n, minlength=n))]
    w = sp.csr_matrix((data, unique % n, indptr), shape=(n, n))
    w.eliminate_zeros()
    return w, float(sigma)


def normalised(w: sp.csr_matrix) -> sp.csr_matrix:
    """S = D^-1/2 W D^-1/2; isolated nodes keep a zero row (they only ever score their own seed)."""
    degree = np.asarray(w.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    np.divide(1.0, np.sqrt(degree), out=inv_sqrt, where=degree > 0)
    # Scale the stored values in place of two sparse products: s_ij = w_ij / sqrt(d_i d_j).
    row_of = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    data = w.data * inv_sqrt[row_of] * inv_sqrt[w.indices]
    return sp.csr_matrix((data, w.indices.copy(), w.indptr.copy()), shape=w.shape)


def seed_vector(n: int, positives: npt.NDArray[np.int64], negatives: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    y = np.zeros(n, dtype=np.float64)
    y[positives] = 1.0
    y[negatives] = -1.0
    return y


def spread(s: sp.csr_matrix, y: npt.NDArray[np.float64], alpha: float, *, solver: Solver = "cg",
           tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER, sigma: float = float("nan")) -> SpreadResult:
    """The fixed point F of F = alpha S F + (1 - alpha) Y, by `solver`, to relative tolerance `tol`."""
    alpha = check_alpha(alpha)
    b = (1.0 - alpha) * y
    if not np.any(b):
        return SpreadResult(np.zeros_like(y), 0, True, 0.0, sigma)
    if solver == "cg":
        a = (sp.identity(s.shape[0], format="csr") - alpha * s).tocsr()
        steps = 0

        def count(_: npt.NDArray[np.float64]) -> None:
            nonlocal steps
            steps += 1

        f, info = spla.cg(a, b, rtol=tol, atol=0.0, maxiter=max_iter, callback=count)
        residual = float(np.linalg.norm(a @ f - b) / np.linalg.norm(b))
        return SpreadResult(f, steps, info == 0, residual, sigma)
    if solver == "iterate":
        f = b.copy()
        change = np.inf
        for step in range(1, max_iter + 1):
            new = alpha * (s @ f) + b
            change = float(np.max(np.abs(new - f)) / max(np.max(np.abs(new)), 1e-300))
            f = new
            # The error left after a step of size `change` is at most change * alpha / (1 - alpha).
            if change * alpha / (1.0 - alpha) <= tol:
                return SpreadResult(f, step, True, change, sigma)
        return SpreadResult(f, max_iter, False, change, sigma)
    raise InputError(f"unknown solver {solver!r}: expected one of {', '.join(SOLVERS)}")


def label_spreading(n: int, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64],
                    distances: npt.NDArray[np.floating], positives: npt.NDArray[np.int64],
                    negatives: npt.NDArray[np.int64], alpha: float = DEFAULT_ALPHA, *, solver: Solver = "cg",
                    tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER,
                    sigma: float | None = None) -> SpreadResult:
    """Scores of n nodes from edges (node indexes) and seed node indexes; see the module docstring."""
    check_alpha(alpha)
    w, used_sigma = affinity(n, rows, cols, distances, sigma)
    return spread(normalised(w), seed_vector(n, positives, negatives), alpha, solver=solver, tol=tol,
                  max_iter=max_iter, sigma=used_sigma)
