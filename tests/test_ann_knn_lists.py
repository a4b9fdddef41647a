"""The k-NN graph by inverted lists: live-id filtering with empty lists anywhere, against brute force."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from sisyphus_db.ann.knn_lists import knn_graph_by_lists
from sisyphus_db.ann.refine import open_refine, write_refine


def _index_with_empty_lists(x: np.ndarray, ids: np.ndarray) -> faiss.IndexIVFFlat:
    """An IVF whose first and last centroids are far from every (unit) vector: those lists stay empty."""
    d = x.shape[1]
    kmeans = faiss.Kmeans(d, 6, niter=10, seed=1)
    kmeans.train(x)
    far = np.zeros((1, d), dtype=np.float32)
    far[0, 0] = 100.0
    quantizer = faiss.IndexFlatL2(d)
    quantizer.add(np.vstack([far, kmeans.centroids, -far]).astype(np.float32))
    index = faiss.IndexIVFFlat(quantizer, d, quantizer.ntotal, faiss.METRIC_L2)
    index.add_with_ids(x, ids)
    return index


def test_live_ids_with_empty_lists_match_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(10, 410, dtype=np.int64)
    index = _index_with_empty_lists(x, ids)
    sizes = [index.invlists.list_size(i) for i in range(index.nlist)]
    assert sizes[0] == 0 and sizes[-1] == 0  # the case np.add.reduceat used to fail on
    store = open_refine(write_refine(tmp_path / "store", ids, vectors=x))
    live = ids[ids % 7 != 0]  # frames deleted since the build are neither sources nor targets

    src, dst, dist = knn_graph_by_lists(index, store, 5, nprobe=index.nlist, live_ids=live)

    assert set(np.unique(src)) == set(live)
    assert not np.isin(dst, ids[ids % 7 == 0]).any()
    xs = store.take(store.rows_of(live))
    sims = xs @ xs.T
    np.fill_diagonal(sims, -np.inf)
    for row in rng.choice(live.size, size=20, replace=False):
        want = live[np.argsort(-sims[row], kind="stable")[:5]]
        got = dst[src == live[row]]
        assert got.size == 5
        assert len(set(got) & set(want)) >= 4  # float16 ties may swap the 5th
        assert np.all(np.diff(dist[src == live[row]]) >= -1e-6)
