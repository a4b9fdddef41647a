"""Building, updating and searching: ids are frame ids, distances are cosine distances."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sisyphus_db.ann import (
    add_vectors,
    apply_search_params,
    build_index,
    clustered_vectors,
    exact_rerank,
    exact_search,
    index_ids,
    remove_ids,
    search,
)
from sisyphus_db.errors import AnnIndexError, InputError

N, D = 5_000, 32


def frame_ids(n: int, start: int = 10_000) -> npt.NDArray[np.int64]:
    """Non-contiguous ids, so a position-for-id mix-up cannot pass unnoticed."""
    return start + 7 * np.arange(n, dtype=np.int64)


@pytest.fixture(scope="module")
def data() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    return clustered_vectors(N, D, n_clusters=40, seed=11), frame_ids(N)


@pytest.fixture(scope="module", params=["Flat", "IVF32,Flat", "IVF32,PQ8"])
def built(request: pytest.FixtureRequest, data: Any) -> Any:
    x, ids = data
    return request.param, build_index(x, ids, factory=request.param, seed=1)


def test_all_vectors_are_added_including_training_ones(built: Any, data: Any) -> None:
    _, index = built
    x, ids = data
    assert index.ntotal == N
    np.testing.assert_array_equal(index_ids(index), np.sort(ids))


def test_search_returns_frame_ids_and_cosine_distances(built: Any, data: Any) -> None:
    factory, index = built
    x, ids = data
    nprobe = None if factory == "Flat" else 8
    dist, found = search(index, x[:20], 5, nprobe=nprobe)
    assert dist.shape == found.shape == (20, 5)
    assert dist.dtype == np.float32 and found.dtype == np.int64
    assert np.isin(found, ids).all()
    # each stored vector finds itself first
    np.testing.assert_array_equal(found[:, 0], ids[:20])
    if "PQ" not in factory:  # PQ distances are approximate by design
        rows = (found - 10_000) // 7
        expected = 1.0 - np.einsum("qkd,qd->qk", x[rows], x[:20])
        np.testing.assert_allclose(dist, expected, atol=1e-5)
    assert (np.diff(dist, axis=1) >= -1e-6).all()


def test_build_is_deterministic(data: Any) -> None:
    x, ids = data
    a = build_index(x, ids, factory="IVF32,Flat", seed=5)
    b = build_index(x, ids, factory="IVF32,Flat", seed=5)
    assert search(a, x[:10], 5, nprobe=4)[1].tolist() == search(b, x[:10], 5, nprobe=4)[1].tolist()


def test_build_reports_progress(data: Any) -> None:
    x, ids = data
    seen: list[int] = []
    build_index(x, ids, factory="Flat", batch_size=2_000, progress=seen.append)
    assert seen == [2_000, 2_000, 1_000]


def test_build_refuses_bad_input(data: Any) -> None:
    x, ids = data
    with pytest.raises(InputError, match="^ids must be unique, got 1 duplicates$"):
        build_index(x[:3], np.array([1, 2, 2]), factory="Flat")
    with pytest.raises(InputError, match="^expected 3 ids, one per vector, got 2$"):
        build_index(x[:3], np.array([1, 2]), factory="Flat")
    with pytest.raises(InputError, match="^vectors must be L2-normalised: row 1 has norm"):
        build_index(np.vstack([x[:1], 2 * x[1:2]]), np.array([1, 2]), factory="Flat")
    with pytest.raises(AnnIndexError, match=r"^IVF256 needs at least 9984 training vectors"):
        build_index(x, ids, factory="IVF256,Flat")


def test_explicit_train_size_is_checked_against_lists(data: Any) -> None:
    x, ids = data
    with pytest.raises(AnnIndexError, match="^IVF32 needs at least 1248 training vectors"):
        build_index(x, ids, factory="IVF32,Flat", train_size=1_000)


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_add_and_remove_keep_the_id_set(factory: str) -> None:
    x = clustered_vectors(3_000, 16, seed=2)
    ids = frame_ids(3_000)
    index = build_index(x[:2_000], ids[:2_000], factory=factory)
    assert add_vectors(index, x[2_000:], ids[2_000:]) == 1_000
    assert index.ntotal == 3_000
    np.testing.assert_array_equal(index_ids(index), np.sort(ids))
    # newly added vectors are searchable under their ids
    _, found = search(index, x[2_500:2_510], 1, nprobe=None if factory == "Flat" else 16)
    np.testing.assert_array_equal(found[:, 0], ids[2_500:2_510])

    gone = ids[::3]
    assert remove_ids(index, np.append(gone, 123_456_789)) == gone.size  # unknown id ignored
    np.testing.assert_array_equal(index_ids(index), np.sort(np.setdiff1d(ids, gone)))
    _, found = search(index, x[::3][:20], 5, nprobe=None if factory == "Flat" else 16)
    assert not np.isin(found, gone).any()

    with pytest.raises(InputError, match=r"^1 ids are already in the index \(first: 10007\)"):
        add_vectors(index, x[1:2], ids[1:2])


def test_selector_returns_only_allowed_ids_and_fills_k(data: Any) -> None:
    x, ids = data
    index = build_index(x, ids, factory="IVF32,Flat", seed=0)
    rng = np.random.default_rng(0)
    allowed = rng.choice(ids, size=25, replace=False)  # a very selective filter
    # nprobe=1 probes too few lists to hold 10 allowed ids: search must widen by itself
    dist, found = search(index, x[:30], 10, nprobe=1, allowed_ids=allowed)
    assert np.isin(found, allowed).all()
    assert (found >= 0).all()
    # probing every list, the filtered IVF search is exact over the allowed ids
    _, full = search(index, x[:30], 10, nprobe=32, allowed_ids=allowed)
    rows = np.flatnonzero(np.isin(ids, allowed))
    _, truth = exact_search(x[rows], ids[rows], x[:30], 10)
    np.testing.assert_array_equal(full, truth)


def test_selector_on_flat_index_and_fewer_allowed_than_k(data: Any) -> None:
    x, ids = data
    index = build_index(x, ids, factory="Flat")
    allowed = ids[[5, 50, 500]]
    dist, found = search(index, x[:4], 5, allowed_ids=allowed)
    assert np.isin(found[:, :3], allowed).all()
    assert (found[:, 3:] == -1).all() and np.isinf(dist[:, 3:]).all()
    _, none = search(index, x[:2], 3, allowed_ids=np.array([], dtype=np.int64))
    assert (none == -1).all()


def test_search_nprobe_per_call_leaves_index_untouched(data: Any) -> None:
    import faiss

    x, ids = data
    index = build_index(x, ids, factory="IVF32,Flat")
    apply_search_params(index, nprobe=3)
    search(index, x[:5], 5, nprobe=20)
    assert faiss.extract_index_ivf(index).nprobe == 3


def test_exact_search_and_rerank_match_numpy(data: Any) -> None:
    x, ids = data
    q = x[7]
    dist, found = exact_search(x, ids, q[None], 10)
    sims = x @ q
    order = np.argsort(-sims, kind="stable")[:10]
    np.testing.assert_array_equal(found[0], ids[order])
    np.testing.assert_allclose(dist[0], 1 - sims[order], atol=1e-5)

    cand = ids[order][::-1].copy()  # scrambled candidates, plus ANN padding
    cand_vecs = x[order][::-1]
    r_ids, r_dist = exact_rerank(q, np.append(cand, -1), np.vstack([cand_vecs, x[:1]]), 5)
    np.testing.assert_array_equal(r_ids, ids[order][:5])
    np.testing.assert_allclose(r_dist, 1 - sims[order][:5], atol=1e-6)


def test_exact_search_pads_when_k_exceeds_n(data: Any) -> None:
    x, ids = data
    dist, found = exact_search(x[:3], ids[:3], x[:1], 5)
    assert (found[0, 3:] == -1).all() and np.isinf(dist[0, 3:]).all()


def test_search_checks_arguments(data: Any) -> None:
    x, ids = data
    index = build_index(x[:100], ids[:100], factory="Flat")
    with pytest.raises(InputError, match="^expected queries of dimension 32, got 8$"):
        search(index, x[:2, :8], 3)
    with pytest.raises(InputError, match="^k must be a positive integer, got 0$"):
        search(index, x[:2], 0)
    with pytest.raises(AnnIndexError, match="^nprobe=4 applies only to IVF indexes"):
        search(index, x[:2], 3, nprobe=4)
