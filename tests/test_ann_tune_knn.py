"""Tuning reaches its recall target against exact search; knn graph; synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from sisyphus_db.ann import (
    build_index,
    clustered_vectors,
    exact_rerank,
    exact_search,
    knn_graph,
    search,
    tune,
)

N, D = 20_000, 64


def frame_ids(n: int) -> np.ndarray:
    return 10_000 + 7 * np.arange(n, dtype=np.int64)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered_vectors(N, D, seed=21), frame_ids(N)


def recall_after_rerank(index, x, ids, nprobe: int, rerank_k: int, n_q: int = 300) -> float:
    """Independent check: other queries than tune's, ground truth from a flat index."""
    rng = np.random.default_rng(99)
    rows = rng.choice(N, n_q, replace=False)
    _, truth = exact_search(x, ids, x[rows], 11)
    _, cand = search(index, x[rows], rerank_k + 1, nprobe=nprobe)
    hits = 0
    for r, t, c in zip(rows, truth, cand, strict=True):
        c = c[(c != ids[r]) & (c >= 0)][:rerank_k]
        got, _ = exact_rerank(x[r], c, x[(c - 10_000) // 7], 10)
        hits += len(set(got) & set(t[t != ids[r]][:10]))
    return hits / (10 * n_q)


@pytest.mark.parametrize(
    "factory, train_size",
    [
        ("IVF64,Flat", None),
        ("IVF64,PQ8", None),
        pytest.param("IVF64,PQ16", 10_000, marks=pytest.mark.slow),
    ],
)
def test_tuned_setting_reaches_recall_target(data, factory: str, train_size) -> None:
    x, ids = data
    index = build_index(x, ids, factory=factory, train_size=train_size)
    assert index.ntotal == N
    result = tune(index, x, ids, target_recall=0.95, n_queries=300)
    assert result.reached
    assert result.recall_at_10 >= 0.95
    assert result.nprobe is not None and 1 <= result.nprobe <= 64
    assert result.rerank_k in (10, 20, 50, 100, 200, 500, 1000)
    # the chosen setting holds on queries the tuner never saw (small sampling margin)
    assert recall_after_rerank(index, x, ids, result.nprobe, result.rerank_k) >= 0.93
    # and the table shows recall growing with rerank depth at a fixed nprobe
    at = [r for r in result.table if r.nprobe == result.nprobe]
    assert all(a.recall_at_10 <= b.recall_at_10 + 1e-9 for a, b in zip(at, at[1:], strict=False))


def test_unreachable_target_returns_best_with_reached_false(data) -> None:
    x, ids = data[0][:4_000], data[1][:4_000]
    index = build_index(x, ids, factory="IVF32,Flat")
    result = tune(index, x, ids, target_recall=1.01, n_queries=100, nprobes=[1, 2],
                  rerank_depths=[10, 20])
    assert not result.reached
    assert result.recall_at_10 == max(r.recall_at_10 for r in result.table)
    assert len(result.table) == 4


def test_flat_needs_no_tuning(data) -> None:
    x, ids = data
    index = build_index(x[:1_000], ids[:1_000], factory="Flat")
    result = tune(index, x[:1_000], ids[:1_000])
    assert (result.nprobe, result.rerank_k, result.recall_at_10, result.reached) == (
        None, 10, 1.0, True,
    )


def test_knn_graph_excludes_self_and_matches_exact() -> None:
    x = clustered_vectors(1_500, 16, seed=8)
    ids = frame_ids(1_500)
    index = build_index(x, ids, factory="Flat")
    calls: list[int] = []
    src, dst, dist = knn_graph(index, x, ids, 5, batch_size=400, progress=calls.append)
    assert calls == [400, 400, 400, 300]
    assert src.shape == dst.shape == dist.shape == (1_500 * 5,)
    assert not (src == dst).any()
    np.testing.assert_array_equal(src[:5], [ids[0]] * 5)
    _, truth = exact_search(x, ids, x[:1], 6)
    np.testing.assert_array_equal(dst[:5], truth[0, 1:])
    rows_s, rows_d = (src - 10_000) // 7, (dst - 10_000) // 7
    np.testing.assert_allclose(dist, 1 - np.einsum("ij,ij->i", x[rows_s], x[rows_d]), atol=1e-5)


def test_knn_graph_on_ivf_uses_nprobe() -> None:
    x = clustered_vectors(3_000, 16, seed=9)
    ids = frame_ids(3_000)
    index = build_index(x, ids, factory="IVF16,Flat")
    src, dst, _ = knn_graph(index, x, ids, 4, nprobe=16)
    assert not (src == dst).any() and src.size == 3_000 * 4


def test_clustered_vectors_are_unit_deterministic_and_clustered() -> None:
    a = clustered_vectors(10_000, 32, n_clusters=20, seed=3)
    b = clustered_vectors(10_000, 32, n_clusters=20, seed=3)
    assert a.dtype == np.float32 and a.shape == (10_000, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # clustered: nearest neighbours are far closer than random pairs
    nn, _ = exact_search(a, np.arange(10_000), a[:100], 2)
    rand = 1 - np.einsum("ij,ij->i", a[:100], a[5_000:5_100])
    assert np.median(nn[:, 1]) < 0.5 * np.median(rand)
