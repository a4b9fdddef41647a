"""Temporal alignment (Hough voting over speed and offset) on generated frame sequences."""

from __future__ import annotations

import numpy as np
import pytest

from sisyphus_db.temporal.align import align, sampling_step, temporal_iou


def _smooth_sequence(seconds: float, step: float, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame vectors of a video whose content drifts slowly: neighbours alike, far frames different."""
    rng = np.random.default_rng(seed)
    times = np.arange(0.0, seconds, step)
    anchors = rng.normal(size=(int(seconds) + 2, dim))
    position = times  # one anchor per second, linear blend between them
    low = np.floor(position).astype(int)
    weight = (position - low)[:, None]
    vectors = anchors[low] * (1 - weight) + anchors[low + 1] * weight
    return times, (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _resample(times: np.ndarray, vectors: np.ndarray, wanted: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = vectors[np.abs(times[None, :] - wanted[:, None]).argmin(axis=1)]
    noisy = picked + noise * rng.normal(size=picked.shape) / np.sqrt(picked.shape[1])
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def test_known_offset_is_recovered() -> None:
    times, vectors = _smooth_sequence(60.0, 0.5)
    q_times = np.arange(0.0, 8.0, 0.5)
    q_vectors = _resample(times, vectors, q_times + 23.0, noise=0.2, seed=1)
    found = align(q_times, q_vectors, times, vectors, match_duration=60.0)
    assert found is not None
    assert found.speed == 1.0
    assert found.offset == pytest.approx(23.0, abs=0.3)
    assert found.match_start == pytest.approx(23.0, abs=0.5)
    assert found.match_end == pytest.approx(31.0, abs=0.6)
    assert found.score > 0.8
    assert temporal_iou((found.match_start, found.match_end), (23.0, 31.0)) > 0.85


def test_known_speed_change_and_dropped_frames() -> None:
    times, vectors = _smooth_sequence(60.0, 0.5, seed=3)
    q_times = np.arange(0.0, 8.0, 0.5)
    q_times = np.delete(q_times, [3, 4, 9])  # dropped frames
    # The query plays 1.25x faster: query second t shows candidate second 10 + 1.25 t.
    q_vectors = _resample(times, vectors, 10.0 + 1.25 * q_times, noise=0.2, seed=4)
    found = align(q_times, q_vectors, times, vectors, match_duration=60.0)
    assert found is not None
    assert found.speed == 1.25
    assert found.match_start == pytest.approx(10.0, abs=0.6)
    assert found.match_end == pytest.approx(20.0, abs=1.0)


def test_excerpt_inside_unrelated_query_gives_its_range() -> None:
    times, vectors = _smooth_sequence(40.0, 0.5, seed=5)
    _filler_times, filler = _smooth_sequence(30.0, 0.5, seed=99)
    # Query: 10 s of unrelated video, then candidate seconds 12-18, then 10 s unrelated again.
    excerpt = _resample(times, vectors, np.arange(12.0, 18.0, 0.5), noise=0.1, seed=6)
    q_vectors = np.concatenate([filler[:20], excerpt, filler[30:50]])
    q_times = np.arange(q_vectors.shape[0]) * 0.5
    found = align(q_times, q_vectors, times, vectors, match_duration=40.0)
    assert found is not None
    assert found.query_start == pytest.approx(10.0, abs=0.6)
    assert found.query_end == pytest.approx(16.0, abs=0.6)
    assert found.match_start == pytest.approx(12.0, abs=0.6)
    assert 0.2 < found.score < 0.5  # a third of the query matches


def test_unrelated_scores_lower_than_copy() -> None:
    times, vectors = _smooth_sequence(30.0, 0.5, seed=7)
    other_times, other = _smooth_sequence(30.0, 0.5, seed=8)
    q_times = np.arange(0.0, 6.0, 0.5)
    q_vectors = _resample(times, vectors, q_times + 5.0, noise=0.2, seed=9)
    copy = align(q_times, q_vectors, times, vectors)
    unrelated = align(q_times, q_vectors, other_times, other)
    assert copy is not None
    assert unrelated is None or unrelated.score < copy.score / 2


def test_sampling_step_and_iou() -> None:
    assert sampling_step(np.array([0.0, 0.5, 1.0, 2.0])) == 0.5
    assert sampling_step(np.array([3.0])) == 0.0
    assert temporal_iou((0.0, 4.0), (2.0, 6.0)) == pytest.approx(2.0 / 6.0)
    assert temporal_iou((0.0, 1.0), (2.0, 3.0)) == 0.0
