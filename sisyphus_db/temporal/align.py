"""Frame-by-frame alignment of a query clip with a candidate video: temporal Hough voting.

The frame similarity matrix S (query frames x candidate frames, cosine) is reduced to each
query frame's few best candidate frames. A copy of the candidate, played at speed `s` and
shifted by `o`, puts query time t at candidate time s * t + o, so every pair votes for
an offset o = t_candidate - s * t_query under each speed in a small set (0.5x to 2x).
The (speed, offset) whose votes carry the most similarity (each query frame counted once,
with its best pair within one sampling step of the line) wins; its supporting query frames
give the query range and the line maps it onto the candidate. Voting instead of a strict
monotonic path keeps it tolerant of dropped or duplicated frames, irregular key-frame
times and stretches that match nothing (an excerpt inside another video).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sisyphus_db.errors import InputError

DEFAULT_SPEEDS = (0.5, 2 / 3, 0.8, 1.0, 1.25, 1.5, 2.0)
DEFAULT_TOP = 3
DEFAULT_MIN_SIMILARITY = 0.3
SPEED_MARGIN = 0.9  # another speed must collect more than 1/0.9 of the best votes to beat one nearer 1x
RELATIVE_SIMILARITY = 0.5  # a supporting frame is at least this fraction of the best frames' similarity
MIN_GAP_SECONDS = 4.0      # a longer stretch without support ends a run


@dataclass(frozen=True)
class Alignment:
    """The best line through the similarity matrix and what it covers.

    `score` is the summed similarity of the supporting query frames divided by the number
    of query frames: 1.0 is a perfect copy of the whole query, a half-covered query at
    best 0.5. Times are seconds; `speed` is candidate seconds per query second.
    """

    score: float
    query_start: float
    query_end: float
    match_start: float
    match_end: float
    speed: float
    offset: float
    support: int

    def to_json(self) -> dict[str, float | int]:
        return {"score": round(self.score, 6), "query_start": round(self.query_start, 3),
                "query_end": round(self.query_end, 3), "match_start": round(self.match_start, 3),
                "match_end": round(self.match_end, 3), "speed": round(self.speed, 4),
                "offset": round(self.offset, 3), "support": self.support}


def sampling_step(times: npt.NDArray[np.float64]) -> float:
    """The typical gap between successive frames (median), 0 for a single frame."""
    if times.size < 2:
        return 0.0
    gaps = np.diff(np.sort(times))
    gaps = gaps[gaps > 1e-9]
    return float(np.median(gaps)) if gaps.size else 0.0


def align(query_times: npt.ArrayLike, query_vectors: npt.NDArray[np.float32], match_times: npt.ArrayLike,
          match_vectors: npt.NDArray[np.float32], *, match_duration: float | None = None,
          speeds: tuple[float, ...] = DEFAULT_SPEEDS, top: int = DEFAULT_TOP,
          min_similarity: float = DEFAULT_MIN_SIMILARITY, tolerance: float | None = None,
          centre: npt.NDArray[np.float32] | None = None) -> Alignment | None:
    """Align unit-length frame vectors of a query and a candidate; None when nothing is similar enough.

    `centre` (the corpus's mean frame vector) is subtracted from both sides first: CNN
    features after a ReLU share a large common component, so two unrelated frames often
    have a cosine of 0.8; centred, unrelated frames sit near 0 and copies stand out.
    """
    if centre is not None:
        query_vectors, match_vectors = centred(query_vectors, centre), centred(match_vectors, centre)
    q_times = np.asarray(query_times, dtype=np.float64)
    c_times = np.asarray(match_times, dtype=np.float64)
    if q_times.shape[0] != query_vectors.shape[0] or c_times.shape[0] != match_vectors.shape[0]:
        raise InputError("every frame needs one time and one vector")
    if q_times.size == 0 or c_times.size == 0:
        return None
    similarity = query_vectors.astype(np.float32) @ match_vectors.astype(np.float32).T
    depth = min(top, c_times.size)
    best = np.argpartition(-similarity, depth - 1, axis=1)[:, :depth]  # n x depth candidate frames
    pair_sims = np.take_along_axis(similarity, best, axis=1)
    valid = pair_sims >= min_similarity
    if not valid.any():
        return None
    q_step, c_step = sampling_step(q_times), sampling_step(c_times)
    tol = tolerance if tolerance is not None else max(0.25, 0.75 * max(c_step, q_step))
    results: list[tuple[float, float, float, npt.NDArray[np.bool_]]] = []
    for speed in speeds:
        offsets = c_times[best] - speed * q_times[:, None]  # n x depth
        centres = offsets[valid]
        # votes[p, i]: query frame i's best similarity among its pairs within tol of centre p.
        near = (np.abs(offsets[None, :, :] - centres[:, None, None]) <= tol) & valid[None, :, :]
        votes = np.where(near, pair_sims[None, :, :], 0.0).max(axis=2)
        totals = votes.sum(axis=1)
        winner = int(np.argmax(totals))
        results.append((float(totals[winner]), speed, float(centres[winner]), near[winner]))
    # A speed other than 1 must clearly beat speed 1 (an unchanged copy is the commonest case;
    # over a short stretch the neighbouring speeds collect nearly the same votes).
    best_total = max(result[0] for result in results)
    plausible = [result for result in results if result[0] >= SPEED_MARGIN * best_total]
    total, speed, line, near = min(plausible, key=lambda result: (abs(np.log(result[1])), -result[0]))
    offsets = c_times[best] - speed * q_times[:, None]
    # Refine the offset: the similarity-weighted median of each supporting frame's best pair.
    rows = np.flatnonzero(near.any(axis=1))
    picks = np.where(near[rows], pair_sims[rows], -np.inf).argmax(axis=1)
    row_offsets = offsets[rows, picks]
    row_sims = pair_sims[rows, picks]
    # Stray look-alikes that happen to sit near the line are not part of the copy: keep the
    # rows that are nearly as similar as the best ones, then the heaviest run of them
    # without a long gap (dropped frames leave short gaps, unrelated footage long ones).
    strong = row_sims >= RELATIVE_SIMILARITY * float(np.quantile(row_sims, 0.9))
    rows, row_offsets, row_sims = rows[strong], row_offsets[strong], row_sims[strong]
    keep = _heaviest_run(q_times[rows], row_sims, max(MIN_GAP_SECONDS, 3.0 * q_step))
    rows, row_offsets, row_sims = rows[keep], row_offsets[keep], row_sims[keep]
    total = float(row_sims.sum())
    offset = _weighted_median(row_offsets, row_sims) if rows.size else line
    q_start = float(q_times[rows].min())
    q_end = float(q_times[rows].max()) + q_step
    m_start = speed * q_start + offset
    m_end = speed * q_end + offset
    upper = match_duration if match_duration and match_duration > 0 else float(c_times.max()) + c_step
    m_start, m_end = max(0.0, m_start), min(upper, m_end)
    if m_end <= m_start:
        m_end = min(upper, m_start + c_step)
    return Alignment(score=total / q_times.size, query_start=q_start, query_end=q_end, match_start=m_start,
                     match_end=m_end, speed=speed, offset=offset, support=int(rows.size))


def centred(vectors: npt.NDArray[np.float32], centre: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Subtract the centre and renormalise (rows that become zero stay zero)."""
    shifted = vectors.astype(np.float32) - centre.astype(np.float32)[None, :]
    norms = np.linalg.norm(shifted, axis=1, keepdims=True)
    return (shifted / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time ranges (0 when either is empty)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 and inter > 0 else 0.0


def _heaviest_run(times: npt.NDArray[np.float64], weights: npt.NDArray[np.float64],
                  max_gap: float) -> npt.NDArray[np.bool_]:
    """Mask of the run (times sorted, gaps <= max_gap) with the largest summed weight."""
    order = np.argsort(times)
    breaks = np.flatnonzero(np.diff(times[order]) > max_gap) + 1
    runs = np.split(order, breaks)
    best = max(runs, key=lambda run: float(weights[run].sum()))
    mask = np.zeros(times.size, dtype=bool)
    mask[best] = True
    return mask


def _weighted_median(values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])
