"""A build streams the table into the refine store and trains, adds and tunes from that mapped
float16 file: the same index as from float32 in memory, without a float32 copy of every vector."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from vector_data import Corpus, make_corpus

from sisyphus_db.ann.arrays import rows_float32
from sisyphus_db.ann.build import build_index
from sisyphus_db.ann.refine import RefineWriter, open_refine
from sisyphus_db.ann.search import exact_search, search
from sisyphus_db.ann.synthetic import clustered_vectors
from sisyphus_db.ann.tune import tune
from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError, InputError
from sisyphus_db.search.indexing import build_faiss_index, index_path
from sisyphus_db.store.vectors import model_vectors, stream_model_vectors


def _half_and_float() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    half = clustered_vectors(4_000, 32, seed=5).astype(np.float16)
    return half, rows_float32(half), np.arange(100, 4_100, dtype=np.int64)


def test_exact_search_over_float16_blocks_equals_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    half, full, ids = _half_and_float()
    queries = full[::97]
    want_d, want_i = exact_search(full, ids, queries, 12)
    # the module (sisyphus_db.ann re-exports a function of the same name)
    monkeypatch.setattr(importlib.import_module("sisyphus_db.ann.search"), "EXACT_BLOCK_BYTES", 333 * 4 * 32)  # blocks of 333 rows
    got_d, got_i = exact_search(half, ids, queries, 12)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, atol=1e-6)


def test_build_and_tune_from_float16_match_float32() -> None:
    half, full, ids = _half_and_float()
    from_half = build_index(half, ids, factory="IVF16,PQ8")
    from_full = build_index(full, ids, factory="IVF16,PQ8")
    _, a = search(from_half, full[:50], 20, nprobe=4)
    _, b = search(from_full, full[:50], 20, nprobe=4)
    np.testing.assert_array_equal(a, b)  # same sample, same values: the same codes
    tuned_half = tune(from_half, half, ids, n_queries=200)
    tuned_full = tune(from_full, full, ids, n_queries=200)
    assert (tuned_half.nprobe, tuned_half.rerank_k, tuned_half.recall_at_10) == (
        tuned_full.nprobe, tuned_full.rerank_k, tuned_full.recall_at_10)


def test_refine_writer_grows_and_shrinks_to_the_rows_given(tmp_path: Path) -> None:
    half, _, ids = _half_and_float()
    for capacity in (10, 4_000, 9_999):  # the table grew, stayed, or shrank since the count
        with RefineWriter(tmp_path / f"store-{capacity}", 32, capacity) as writer:
            for start in range(0, 4_000, 1_500):
                writer.add(ids[start:start + 1_500], half[start:start + 1_500])
            files = writer.finish()
        store = open_refine(files, check_vectors_sha=True)
        np.testing.assert_array_equal(store.ids, ids)
        np.testing.assert_array_equal(np.asarray(store.vectors), half)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left


def test_refine_writer_refuses_ids_out_of_order_and_leaves_nothing(tmp_path: Path) -> None:
    half, _, ids = _half_and_float()
    with pytest.raises(InputError, match="ascending"), RefineWriter(tmp_path / "store", 32, 100) as writer:
        writer.add(ids[50:100], half[50:100])
        writer.add(ids[:50], half[:50])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def corpus(database: Database) -> Corpus:
    return make_corpus(database, n=2_500, d=32, n_sources=10, model_name="stream-32")


def test_streamed_vectors_are_the_table_values(database: Database, corpus: Corpus) -> None:
    ids, vectors = model_vectors(database, corpus.model.id, corpus.model.dim)
    blocks = list(stream_model_vectors(database, corpus.model.id, corpus.model.dim))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), ids)
    streamed = np.concatenate([b[1] for b in blocks])
    assert streamed.dtype == np.float16
    np.testing.assert_array_equal(rows_float32(streamed), vectors)


def test_a_failed_build_leaves_no_refine_files(database: Database, corpus: Corpus) -> None:
    folder = index_path(database, corpus.model).parent
    before = set(folder.iterdir()) if folder.exists() else set()
    with pytest.raises(AnnIndexError):
        build_faiss_index(database, corpus.model, factory="IVF100000,PQ8")  # more lists than vectors
    assert set(folder.iterdir()) == before


def test_two_databases_sharing_a_home_keep_separate_index_files(database: Database, corpus: Corpus,
                                                                 fresh_database_url: str) -> None:
    from dataclasses import replace

    other = replace(database, url=fresh_database_url, bound=None)  # same home, another database
    assert index_path(other, corpus.model) != index_path(database, corpus.model)
    assert index_path(other, corpus.model).name == index_path(database, corpus.model).name
    assert index_path(database, corpus.model).parent.parent == database.settings.index_dir


def test_a_reader_that_stops_early_leaves_the_database_usable(database: Database, corpus: Corpus,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import sisyphus_db.store.vectors as store_vectors

    monkeypatch.setattr(store_vectors, "_PARSE_BYTES", 4096)  # many blocks
    stream = stream_model_vectors(database, corpus.model.id, corpus.model.dim)
    first_ids, _ = next(stream)
    assert 0 < first_ids.size < 2_500
    stream.close()  # e.g. a build that failed after the first block
    ids, _ = model_vectors(database, corpus.model.id, corpus.model.dim)
    assert ids.size == 2_500
