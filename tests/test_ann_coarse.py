"""Two-level k-means for large IVF coarse quantizers (sisyphus_db.ann.coarse)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from sisyphus_db.ann import coarse
from sisyphus_db.ann.build import build_index
from sisyphus_db.ann.search import exact_search, search
from sisyphus_db.ann.synthetic import clustered_vectors


def _mean_squared_error(x: np.ndarray, centroids: np.ndarray) -> float:
    flat = faiss.IndexFlatL2(x.shape[1])
    flat.add(centroids)
    distances, _ = flat.search(x, 1)
    return float(distances.mean())


def test_two_level_centroids_cluster_about_as_well_as_flat_kmeans() -> None:
    x = clustered_vectors(20_000, 32, seed=1)
    nlist = 256
    two = coarse.two_level_centroids(x, nlist, seed=0)
    assert two.shape == (nlist, 32) and np.isfinite(two).all()
    assert np.unique(two, axis=0).shape[0] == nlist  # no list is a copy of another
    flat = faiss.Kmeans(32, nlist, niter=10, seed=0, max_points_per_centroid=1000)
    flat.train(x)
    # a little less even than flat k-means, never much worse (measured: within a few %)
    assert _mean_squared_error(x, two) <= 1.10 * _mean_squared_error(x, flat.centroids)


def test_shares_follow_group_sizes_and_add_up() -> None:
    sizes = np.array([1000, 10, 0, 3, 500], dtype=np.int64)
    shares = coarse._shares(sizes, 100)
    assert shares.sum() == 100
    assert shares[2] == 0 and (shares[sizes > 0] >= 1).all() and (shares <= sizes).all()
    assert shares[0] > shares[4] > shares[1]


def test_a_large_ivf_is_built_on_two_level_centroids(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered_vectors(30_000, 32, seed=2)
    ids = np.arange(x.shape[0], dtype=np.int64) * 5 + 11
    calls: list[int] = []
    original = coarse.two_level_centroids

    def counted(sample: np.ndarray, nlist: int, **kwargs: object) -> np.ndarray:
        calls.append(nlist)
        return original(sample, nlist, **kwargs)

    monkeypatch.setattr(coarse, "two_level_centroids", counted)
    monkeypatch.setattr(coarse, "TWO_LEVEL_MIN_NLIST", 128)
    index = build_index(x, ids, factory="IVF128,PQ8")
    assert calls == [128] and index.ntotal == x.shape[0]
    queries = x[:200]
    _, truth = exact_search(x, ids, queries, 10)
    _, found = search(index, queries, 100, nprobe=16)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.9
    monkeypatch.setattr(coarse, "TWO_LEVEL_MIN_NLIST", 1 << 30)
    calls.clear()
    build_index(x, ids, factory="IVF128,PQ8")
    assert calls == []  # small IVFs keep faiss's flat k-means


def test_an_hnsw_quantizer_gets_the_two_level_centroids(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered_vectors(30_000, 32, seed=3)
    ids = np.arange(x.shape[0], dtype=np.int64)
    monkeypatch.setattr(coarse, "TWO_LEVEL_MIN_NLIST", 128)
    index = build_index(x, ids, factory="IVF128_HNSW32,PQ8")
    ivf = faiss.extract_index_ivf(index)
    assert isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSWFlat) and ivf.quantizer.ntotal == 128
    _, truth = exact_search(x, ids, x[:200], 10)
    _, found = search(index, x[:200], 100, nprobe=16)
    assert np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]) >= 0.9


def test_an_hnsw_quantizer_explores_at_least_the_lists_probed() -> None:
    # no cluster structure: the true neighbours spread over many lists, so poor lists cost recall
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20_000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(x.shape[0], dtype=np.int64)
    index = faiss.index_factory(32, "IVF512_HNSW32,Flat")
    index.train(x)
    index.add_with_ids(x, ids)
    faiss.downcast_index(faiss.extract_index_ivf(index).quantizer).hnsw.efSearch = 2  # a poor default
    queries = x[:300]
    _, truth = exact_search(x, ids, queries, 10)
    raw = faiss.SearchParametersIVF()
    raw.nprobe = 64
    _, plain = index.search(queries, 10, params=raw)  # the quantizer explores too few centroids
    _, found = search(index, queries, 10, nprobe=64)

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))

    assert recall(found) > recall(plain) + 0.15  # measured 0.86 against 0.63
