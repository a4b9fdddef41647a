"""The faiss sidecar's refine store: float16 vectors next to the index, in sync with the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from vector_data import Corpus, add_frames, delete_frames, make_corpus

import sisyphus_db.search.knn_graph as knn_graph_module
import sisyphus_db.store.vectors as store_vectors
from sisyphus_db.ann.files import file_sha256, read_index
from sisyphus_db.ann.refine import RefineFiles, open_refine, to_float32
from sisyphus_db.ann.search import search as ann_search
from sisyphus_db.db.database import Database
from sisyphus_db.search.engine import SearchRequest, search
from sisyphus_db.search.faiss_plans import bulk_neighbours
from sisyphus_db.search.index_verify import verify_faiss_index
from sisyphus_db.search.indexing import build_faiss_index, drop_index, update_faiss_index
from sisyphus_db.search.knn_graph import build_knn_graph
from sisyphus_db.search.queries import Query
from sisyphus_db.search.refine_sidecar import load_refine
from sisyphus_db.store.indexes import update_index
from sisyphus_db.store.vectors import model_vectors


@pytest.fixture
def corpus(database: Database) -> Corpus:
    return make_corpus(database, n=3_000, d=32, n_sources=20, model_name="refine-32")


def _query(vector: np.ndarray) -> Query:
    return Query(vector.astype(np.float32), {"kind": "vector"})


def _store_matches_table(database: Database, corpus: Corpus, files: RefineFiles) -> None:
    store = open_refine(files, check_vectors_sha=True)
    ids, table = model_vectors(database, corpus.model.id, corpus.model.dim)
    np.testing.assert_array_equal(store.ids, ids)
    # halfvec -> float32 -> float16 is exact, so "within float16" means bit for bit here
    np.testing.assert_array_equal(np.asarray(store.vectors), table.astype(np.float16))
    assert store.vectors.dtype == np.float16 and isinstance(store.vectors, np.memmap)


def test_build_writes_the_table_vectors_as_float16_beside_the_index(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="IVF16,PQ8x4").record
    files = RefineFiles.from_params(record.params["refine"])
    assert files.ntotal == record.ntotal == 3_000 and files.dim == 32
    for path, sha in ((files.vectors_path, files.vectors_sha256), (files.ids_path, files.ids_sha256)):
        assert Path(path).parent == Path(str(record.path)).parent and file_sha256(path) == sha
    _store_matches_table(database, corpus, files)
    assert verify_faiss_index(database, corpus.model).ok
    assert verify_faiss_index(database, corpus.model, full=True).ok


def test_search_reranks_from_memory_without_fetching_vectors(database: Database, corpus: Corpus,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    build_faiss_index(database, corpus.model, factory="IVF16,PQ8x4")
    expected = [search(database, corpus.model, _query(q), SearchRequest(k=10, backend="exact", save=False))
                for q in corpus.queries[:10]]

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the rerank fetched vectors from PostgreSQL")

    monkeypatch.setattr(store_vectors, "vectors_by_id", refuse)
    recalls = []
    for q, truth in zip(corpus.queries[:10], expected, strict=True):
        outcome = search(database, corpus.model, _query(q), SearchRequest(k=10, save=False))
        assert outcome.params["rerank"] == "memory"
        found = [hit.frame_id for hit in outcome.hits]
        recalls.append(len(set(found) & {hit.frame_id for hit in truth.hits}) / 10)
        # exact distances after the rerank (not PQ approximations): equal to SQL's where ids agree
        sql = {hit.frame_id: hit.distance for hit in truth.hits}
        for hit in outcome.hits:
            if hit.frame_id in sql:
                assert hit.distance == pytest.approx(sql[hit.frame_id], abs=2e-3)
    assert np.mean(recalls) >= 0.9


def test_bulk_search_equals_single_search(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="IVF16,Flat").record
    distances, ids = bulk_neighbours(record, corpus.queries[:20], 5, batch_size=7)
    for q, row, dist in zip(corpus.queries[:20], ids, distances, strict=True):
        outcome = search(database, corpus.model, _query(q), SearchRequest(k=5, save=False))
        assert [hit.frame_id for hit in outcome.hits] == row.tolist()
        np.testing.assert_allclose([hit.distance for hit in outcome.hits], dist, atol=1e-6)


def test_update_and_delete_keep_the_store_in_sync(database: Database, corpus: Corpus) -> None:
    built = build_faiss_index(database, corpus.model, factory="IVF16,PQ8x4").record
    old = RefineFiles.from_params(built.params["refine"])
    new_ids = add_frames(database, corpus, corpus.queries[:30])
    gone = corpus.ids[:25]
    delete_frames(database, gone)
    # Before the update: a deleted frame is still in the store, yet never comes back from search.
    for frame_id, vector in zip(gone[:5], corpus.vectors[:5], strict=True):
        outcome = search(database, corpus.model, _query(vector), SearchRequest(k=10, save=False))
        assert int(frame_id) not in [hit.frame_id for hit in outcome.hits]
        assert len(outcome.hits) == 10  # the next ranked frames fill k
    report = update_faiss_index(database, corpus.model)
    assert (report.added, report.removed) == (30, 25)
    files = RefineFiles.from_params(report.record.params["refine"])
    assert files.ntotal == report.record.ntotal == 3_000 + 30 - 25
    _store_matches_table(database, corpus, files)
    # The old generation is gone once the registry points at the new one.
    assert not Path(old.vectors_path).exists() and not Path(old.ids_path).exists()
    assert verify_faiss_index(database, corpus.model, full=True).ok
    outcome = search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(k=1, save=False))
    assert [hit.frame_id for hit in outcome.hits] == [int(new_ids[0])]
    dropped = drop_index(database, corpus.model, "faiss")
    assert dropped.id == report.record.id and not Path(files.vectors_path).exists()


def test_verify_catches_a_tampered_vector_file(database: Database, corpus: Corpus,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    record = build_faiss_index(database, corpus.model, factory="IVF16,PQ8x4").record
    files = RefineFiles.from_params(record.params["refine"])
    data = np.load(files.vectors_path, mmap_mode="r+")
    frame_row = 1234
    data[frame_row, :4] = np.float16(0.5)
    data.flush()
    del data
    problems = verify_faiss_index(database, corpus.model).problems
    assert len(problems) == 1 and "does not match its registry checksum" in problems[0]
    # Someone also "fixed" the registry checksum: the values are then compared with the table.
    update_index(database, record.id, params={**record.params, "refine": {
        **record.params["refine"], "sha256": file_sha256(files.vectors_path)}})
    import sisyphus_db.search.refine_sidecar as refine_sidecar

    monkeypatch.setattr(refine_sidecar, "VERIFY_SAMPLE", 5_000)  # the sample then covers all 3,000 rows
    for full in (False, True):
        problems = verify_faiss_index(database, corpus.model, full=full).problems
        assert problems == [f"1 of 3000 {'' if full else 'sampled '}refine vectors differ from the table "
                            f"(e.g. frame {int(np.sort(corpus.ids)[frame_row])}): rebuild with `sisyphus index build`"]


def test_a_missing_refine_file_is_a_clear_error(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="Flat").record
    Path(record.params["refine"]["ids_path"]).unlink()
    from sisyphus_db.search.refine_sidecar import forget_refine

    forget_refine(RefineFiles.from_params(record.params["refine"]))
    from sisyphus_db.errors import AnnIndexError

    with pytest.raises(AnnIndexError, match=r"^refine file .*ids\.npy does not exist: rebuild with"):
        search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(save=False))
    assert "does not exist" in verify_faiss_index(database, corpus.model).problems[0]


def test_memory_mapped_index_searches_like_a_copied_one(database: Database, corpus: Corpus) -> None:
    for factory in ("IVF16,PQ8", "Flat"):
        record = build_faiss_index(database, corpus.model, factory=factory).record
        copied = read_index(str(record.path))
        mapped = read_index(str(record.path), mmap=True)
        for nprobe in ((4,) if factory != "Flat" else (None,)):
            a = ann_search(copied, corpus.queries[:20], 10, nprobe=nprobe)
            b = ann_search(mapped, corpus.queries[:20], 10, nprobe=nprobe)
            np.testing.assert_array_equal(a[1], b[1])
        assert mapped.ntotal == copied.ntotal == 3_000


def test_float16_conversion_is_exact() -> None:
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    np.testing.assert_array_equal(to_float32(finite), finite.astype(np.float32))
    # every value, in the shapes the rerank uses (rows of vectors, blocks of candidate rows)
    grid = np.random.default_rng(0).permutation(every).reshape(64, 8, 128)
    np.testing.assert_array_equal(to_float32(grid), grid.astype(np.float32))
    np.testing.assert_array_equal(to_float32(grid[:, 3]), grid[:, 3].astype(np.float32))  # not contiguous
    assert to_float32(grid[:0]).shape == (0, 8, 128) and to_float32(np.float16(1.5)) == np.float32(1.5)


def test_knn_graph_in_bulk_with_constraints_set_aside(database: Database, corpus: Corpus,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    build_faiss_index(database, corpus.model, factory="IVF16,PQ8x4")
    delete_frames(database, corpus.ids[:10])  # not yet removed from the index: no edges to or from them
    monkeypatch.setattr(knn_graph_module, "BULK_EDGES", 0)

    def constraints() -> list[tuple[str, str]]:
        with database.transaction() as conn:
            return sorted(conn.execute(sa.text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'knn_edges'::regclass "
                "UNION ALL SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
                "WHERE indrelid = 'knn_edges'::regclass")).all())

    before = constraints()
    report = build_knn_graph(database, corpus.model, k=5)
    assert constraints() == before
    assert report.frames == 2_990 and report.edges == 2_990 * 5
    with database.transaction() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, rank, neighbor_id, distance FROM knn_edges WHERE model_id = :m "
                                    "ORDER BY frame_id, rank"), {"m": corpus.model.id}).all()
    gone = set(corpus.ids[:10].tolist())
    assert not gone & ({r[0] for r in rows} | {r[2] for r in rows})
    ids, vectors = model_vectors(database, corpus.model.id, corpus.model.dim)
    by_id = dict(zip(ids.tolist(), vectors, strict=True))
    for frame_id, _rank, neighbour, distance in rows[:200]:
        # exact (re-ranked) distances, not the PQ codes' approximations
        assert distance == pytest.approx(1.0 - float(by_id[frame_id] @ by_id[neighbour]), abs=2e-3)
    store = load_refine(update_faiss_index(database, corpus.model).record)
    assert store is not None and store.ntotal == 2_990
