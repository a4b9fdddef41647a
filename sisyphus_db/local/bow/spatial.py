"""Spatial re-ranking: the window of a frame's assignment map whose words best match the query.

Every axis-aligned window of whole cells (sides from MIN_SIDE cells up, growing by SIDE_STEP) is scored
by the cosine of its tf-idf histogram with the query's, through per-word integral
images; the best window is the frame's new score and its localisation box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MIN_SIDE = 2  # a single cell holding one query word would match a one-word query perfectly


@dataclass(frozen=True)
class Window:
    score: float
    r0: int
    c0: int
    r1: int
    c1: int
    words: npt.NDArray[np.int32]  # the words inside the window, for query expansion


SIDE_STEP = 1.3  # window sides grow geometrically: 2, 3, 4, 6, 7, 10, 13, 14 cells on a 14-cell axis


def _sides(length: int) -> list[int]:
    sides, side = {length}, float(min(MIN_SIDE, length))
    while side < length:
        sides.add(round(side))
        side *= SIDE_STEP
    return sorted(sides)


def best_window(grid: npt.NDArray[np.int32], query: npt.NDArray[np.float64], idf: npt.NDArray[np.float64]
                ) -> Window:
    """The (h, w) assignment map's best window for a query tf histogram (words,)."""
    h, w = grid.shape
    present, inverse = np.unique(grid, return_inverse=True)
    inverse = inverse.reshape(h, w)
    weights = idf[present]
    q = query[present] * weights  # the query's tf-idf on the frame's words
    q_norm = float(np.linalg.norm(query * idf))
    best = Window(0.0, 0, 0, h, w, grid.ravel())
    if q_norm == 0.0 or not q.any():
        return best
    onehot = np.zeros((present.size, h + 1, w + 1), dtype=np.float64)
    onehot[inverse, np.arange(h)[:, None] + 1, np.arange(w)[None, :] + 1] = 1.0
    integral = onehot.cumsum(axis=1).cumsum(axis=2)
    for side_h in _sides(h):
        for side_w in _sides(w):
            counts = (integral[:, side_h:, side_w:] - integral[:, :-side_h, side_w:]
                      - integral[:, side_h:, :-side_w] + integral[:, :-side_h, :-side_w])  # (words, y, x)
            weighted = counts * weights[:, None, None]
            dots = np.tensordot(q, weighted, axes=(0, 0))
            norms = np.sqrt((weighted ** 2).sum(axis=0))
            scores = dots / (np.maximum(norms, 1e-12) * q_norm)
            y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
            # Sides grow through the loops, so on a tie (cosine ignores scale) the larger window wins.
            if scores[y, x] >= best.score - 1e-9 and scores[y, x] > 0:
                best = Window(float(scores[y, x]), int(y), int(x), int(y + side_h), int(x + side_w),
                              grid[y:y + side_h, x:x + side_w].ravel())
    return best
