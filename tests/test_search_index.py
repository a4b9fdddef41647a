"""Index build/update/verify/drop against a real PostgreSQL: ids are frame ids, recall is
checked against the exact backend, and the registry says what the file holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from vector_data import Corpus, add_frames, delete_frames, make_corpus, recall_at

from sisyphus_db.ann.build import index_ids
from sisyphus_db.ann.files import file_sha256, read_index, write_index_atomic
from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError, DeviceError, InputError
from sisyphus_db.search.backends import exact_neighbours, pgvector_neighbours
from sisyphus_db.search.engine import SearchRequest, search
from sisyphus_db.search.index_verify import verify_faiss_index
from sisyphus_db.search.indexing import build_faiss_index, drop_index, update_faiss_index
from sisyphus_db.search.pgvector_index import build_pgvector_index, hnsw_index_name
from sisyphus_db.search.queries import Query
from sisyphus_db.store.indexes import find_index


@pytest.fixture
def corpus(database: Database) -> Corpus:
    return make_corpus(database, n=6_000, d=64, n_sources=100)


def _query(vector: np.ndarray) -> Query:
    return Query(vector.astype(np.float32), {"kind": "vector", "path": "test"})


def _ids(database: Database, corpus: Corpus, vector: np.ndarray, backend: str, k: int = 10) -> list[int]:
    outcome = search(database, corpus.model, _query(vector), SearchRequest(k=k, backend=backend, save=False))
    return [hit.frame_id for hit in outcome.hits]


def _mean_recall(database: Database, corpus: Corpus, backend: str, queries: np.ndarray) -> float:
    recalls = [recall_at(_ids(database, corpus, q, backend), _ids(database, corpus, q, "exact")) for q in queries]
    return float(np.mean(recalls))


def test_auto_builds_a_flat_index_whose_ids_are_frame_ids(database: Database, corpus: Corpus) -> None:
    report = build_faiss_index(database, corpus.model, factory="auto")
    record = report.record
    assert record.factory == "Flat"  # 6k vectors: brute force
    assert (record.backend, record.metric, record.state, record.device) == ("faiss", "cosine", "ready", "cpu")
    assert record.ntotal == report.vectors == corpus.ids.size
    assert record.watermark == int(corpus.ids.max())
    assert record.recall_at_10 == 1.0 and record.params["nprobe"] is None
    assert record.build_seconds is not None and record.build_seconds > 0
    path = Path(str(record.path))
    assert record.sha256 == file_sha256(path)
    stored = index_ids(read_index(path))
    assert corpus.ids.min() > 1_000_000  # frame ids, not positions 0..n-1
    np.testing.assert_array_equal(stored, np.sort(corpus.ids))
    assert _mean_recall(database, corpus, "faiss", corpus.queries[:10]) == 1.0


@pytest.mark.parametrize("factory", ["IVF64,Flat", pytest.param("IVF64,PQ16x4", marks=pytest.mark.slow)])
def test_ivf_factories_reach_the_target_recall_after_rerank(database: Database, corpus: Corpus,
                                                             factory: str) -> None:
    record = build_faiss_index(database, corpus.model, factory=factory, target_recall=0.95).record
    assert record.factory == factory
    assert record.recall_at_10 is not None and record.recall_at_10 >= 0.95
    assert record.params["reached"] is True and record.params["target_recall"] == 0.95
    assert 1 <= record.params["nprobe"] <= 64 and record.params["rerank_k"] >= 10
    np.testing.assert_array_equal(index_ids(read_index(str(record.path))), np.sort(corpus.ids))
    # Held-out queries through the whole search path, against the exact backend.
    assert _mean_recall(database, corpus, "faiss", corpus.queries) >= 0.95


def test_ivf_with_fewer_than_39_training_points_per_list_is_refused(database: Database, corpus: Corpus) -> None:
    with pytest.raises(AnnIndexError, match=r"^IVF256 needs at least 9984 training vectors \(39 per list\), "
                                            r"got 6000: use fewer lists or a Flat index$"):
        build_faiss_index(database, corpus.model, factory="IVF256,Flat")
    with pytest.raises(AnnIndexError, match=r"^IVF64 needs at least 2496 training vectors \(39 per list\), got 1000"):
        build_faiss_index(database, corpus.model, factory="IVF64,Flat", train_size=1000)
    assert find_index(database, corpus.model.id, "faiss") is None


def test_device_cuda_without_gpu_faiss_is_a_clear_error(database: Database, corpus: Corpus) -> None:
    from sisyphus_db.ann.device import faiss_num_gpus

    if faiss_num_gpus() > 0:
        pytest.skip("this faiss has a GPU")
    with pytest.raises(DeviceError, match=r"^--device cuda was asked for but this faiss has no GPU support"):
        build_faiss_index(database, corpus.model, device="cuda")
    assert find_index(database, corpus.model.id, "faiss") is None


def test_target_recall_out_of_range_is_refused(database: Database, corpus: Corpus) -> None:
    with pytest.raises(InputError, match=r"^--target-recall must be in \(0, 1\], got 1.5$"):
        build_faiss_index(database, corpus.model, target_recall=1.5)


def test_update_adds_frames_above_the_watermark_without_retraining(database: Database, corpus: Corpus) -> None:
    built = build_faiss_index(database, corpus.model, factory="IVF64,Flat").record
    new_vectors = corpus.queries[:20]
    new_ids = add_frames(database, corpus, new_vectors)
    assert new_ids.min() > built.watermark
    # Before the update the new frames are not searched, and the search says so.
    outcome = search(database, corpus.model, _query(new_vectors[0]), SearchRequest(k=5, save=False))
    assert int(new_ids[0]) not in [hit.frame_id for hit in outcome.hits]
    assert outcome.warnings == ["20 frames are newer than the faiss index and not searched: "
                                "run `sisyphus index update`"]
    report = update_faiss_index(database, corpus.model)
    updated = report.record
    assert (report.added, report.removed) == (20, 0)
    assert updated.ntotal == built.ntotal + 20 and updated.watermark == int(new_ids.max())
    # Same trained index: factory, tuned parameters and build time kept; a new file checksum
    # (and a new generation of refine vectors, tests/test_sidecar_refine.py).
    tuned_only = lambda params: {key: value for key, value in params.items() if key != "refine"}  # noqa: E731
    assert (updated.factory, tuned_only(updated.params), updated.recall_at_10, updated.build_seconds) == (
        built.factory, tuned_only(built.params), built.recall_at_10, built.build_seconds)
    assert updated.params["refine"]["ntotal"] == updated.ntotal
    assert updated.sha256 != built.sha256 and updated.sha256 == file_sha256(str(updated.path))
    np.testing.assert_array_equal(index_ids(read_index(str(updated.path))), np.sort(corpus.ids))
    for frame_id, vector in zip(new_ids[:5], new_vectors[:5], strict=True):
        assert _ids(database, corpus, vector, "faiss", k=1) == [int(frame_id)]
    assert update_faiss_index(database, corpus.model).added == 0  # nothing new: nothing done
    assert verify_faiss_index(database, corpus.model).ok


def test_deleted_frames_never_come_back_and_update_removes_them(database: Database, corpus: Corpus) -> None:
    build_faiss_index(database, corpus.model, factory="IVF64,Flat")
    build_pgvector_index(database, corpus.model)
    queries = corpus.queries[:5]
    # Delete the five nearest frames of every query: the best answers there are.
    doomed = sorted({i for q in queries for i in _ids(database, corpus, q, "exact", k=5)})
    delete_frames(database, doomed)
    for q in queries:
        for backend in ("faiss", "pgvector", "exact"):
            found = _ids(database, corpus, q, backend)
            assert not set(found) & set(doomed), backend
            assert len(found) == 10, backend  # k is still filled from the frames that remain
    report = verify_faiss_index(database, corpus.model)
    assert report.problems == [f"{len(doomed)} ids in the index are no longer in the table "
                               f"(e.g. {', '.join(str(i) for i in doomed[:5])}): run `sisyphus index update`"]
    update = update_faiss_index(database, corpus.model)
    assert (update.added, update.removed) == (0, len(doomed))
    assert update.record.ntotal == corpus.ids.size - len(doomed)
    assert verify_faiss_index(database, corpus.model).ok


def test_verify_reports_a_consistent_index_and_pending_frames(database: Database, corpus: Corpus) -> None:
    build_faiss_index(database, corpus.model, factory="Flat")
    report = verify_faiss_index(database, corpus.model)
    assert report.ok and report.problems == [] and report.pending == 0
    add_frames(database, corpus, corpus.queries[:3])
    report = verify_faiss_index(database, corpus.model)
    assert report.ok and report.pending == 3  # newer frames are not an inconsistency


def test_verify_catches_a_tampered_file(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="Flat").record
    path = Path(str(record.path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the stored vectors
    path.write_bytes(bytes(data))
    problems = verify_faiss_index(database, corpus.model).problems
    assert len(problems) == 1
    assert problems[0].startswith(f"index file {path} has sha256 {file_sha256(path)[:12]}, the registry says "
                                  f"{str(record.sha256)[:12]}: it was changed or replaced")
    with pytest.raises(AnnIndexError, match=r"does not match its registry checksum: rebuild with"):
        search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(save=False))


def test_verify_catches_a_replaced_file_with_other_frames(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="Flat").record
    from sisyphus_db.ann.build import build_index

    # An older build that held only the first 5,000 frames, written over the current file.
    older = build_index(corpus.vectors[:5_000], corpus.ids[:5_000], factory="Flat")
    write_index_atomic(older, str(record.path))
    problems = verify_faiss_index(database, corpus.model).problems
    assert [p.split(":")[0] for p in problems] == [f"index file {record.path} has sha256 "
                                                   f"{file_sha256(str(record.path))[:12]}, the registry says "
                                                   f"{str(record.sha256)[:12]}",
                                                   "the file holds 5000 vectors, the registry says 6000",
                                                   f"1000 frames at or below the watermark {record.watermark} "
                                                   "are missing from the index (e.g. "
                                                   + ", ".join(str(i) for i in np.sort(corpus.ids[5_000:])[:5])
                                                   + ")",
                                                   "the refine store and the index hold different ids (1000 differ, "
                                                   "e.g. " + ", ".join(str(i) for i in np.sort(corpus.ids[5_000:])[:5])
                                                   + ")"]


def test_verify_catches_a_stale_registry_row(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="Flat").record
    with database.transaction() as conn:
        conn.execute(sa.text("UPDATE ann_indexes SET ntotal = ntotal + 7, watermark = watermark + 100 "
                             "WHERE id = :i"), {"i": record.id})
    problems = verify_faiss_index(database, corpus.model).problems
    assert problems == [f"the file holds {record.ntotal} vectors, the registry says {record.ntotal + 7}"]


def test_verify_and_search_report_a_missing_file(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="Flat").record
    search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(save=False))  # loaded and cached
    Path(str(record.path)).unlink()
    assert verify_faiss_index(database, corpus.model).problems == [
        f"index file {record.path} is missing: rebuild with `sisyphus index build`"]
    with pytest.raises(AnnIndexError, match=rf"^index file {record.path} does not exist: rebuild with "):
        search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(save=False))


def test_drop_removes_the_file_and_the_registry_row(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="Flat").record
    drop_index(database, corpus.model, "faiss")
    assert not Path(str(record.path)).exists()
    assert find_index(database, corpus.model.id, "faiss") is None
    message = f"there is no faiss index for {corpus.model.name}"
    with pytest.raises(AnnIndexError, match=rf"^{message}$"):
        drop_index(database, corpus.model, "faiss")
    with pytest.raises(AnnIndexError, match=rf"^{message}: run `sisyphus index build`$"):
        search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(save=False))
    # The vectors stay: exact search still works.
    assert len(_ids(database, corpus, corpus.queries[0], "exact")) == 10


def test_pgvector_hnsw_build_tunes_ef_search_and_drops(database: Database, corpus: Corpus) -> None:
    record = build_pgvector_index(database, corpus.model, target_recall=0.95).record
    assert record.backend == "pgvector" and record.factory == "HNSW(m=16,ef_construction=64)"
    assert record.ntotal == corpus.ids.size and record.watermark == int(corpus.ids.max())
    assert record.recall_at_10 is not None and record.recall_at_10 >= 0.95
    assert record.params["ef_search"] in (40, 80, 160, 320, 640, 1000)
    with database.transaction() as conn:
        plan = "\n".join(conn.execute(sa.text(
            f"EXPLAIN SELECT frame_id FROM embeddings e WHERE e.model_id = {corpus.model.id} "
            f"ORDER BY (e.vec::halfvec(64)) <=> '{np.zeros(64).tolist()}'::halfvec(64) LIMIT 10")).scalars())
    assert hnsw_index_name(corpus.model) in plan  # the planner uses the expression index
    found, _ = pgvector_neighbours(database, corpus.model, corpus.queries[0], 10, ef_search=record.params["ef_search"])
    truth, _ = exact_neighbours(database, corpus.model, corpus.queries[0], 10)
    assert recall_at(found.tolist(), truth.tolist()) >= 0.8
    drop_index(database, corpus.model, "pgvector")
    with database.transaction() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_indexes WHERE indexname = :n"),
                            {"n": hnsw_index_name(corpus.model)}).scalar_one() == 0
    assert find_index(database, corpus.model.id, "pgvector") is None


def test_vectors_read_back_in_bulk_match_what_was_stored(database: Database, corpus: Corpus) -> None:
    from sisyphus_db.store.vectors import model_vectors, vectors_by_id

    ids, vectors = model_vectors(database, corpus.model.id, corpus.model.dim)
    order = np.argsort(corpus.ids)
    np.testing.assert_array_equal(ids, corpus.ids[order])
    np.testing.assert_allclose(vectors, corpus.vectors[order], atol=2e-3)  # halfvec precision
    above = model_vectors(database, corpus.model.id, corpus.model.dim, above_id=int(ids[-10]))[0]
    np.testing.assert_array_equal(above, ids[-9:])
    some = [int(ids[5]), -1, int(ids[0]), 123, int(ids[5])]  # duplicates, padding and unknown ids
    got_ids, got = vectors_by_id(database, corpus.model.id, corpus.model.dim, some)
    np.testing.assert_array_equal(got_ids, [ids[0], ids[5]])
    np.testing.assert_array_equal(got, vectors[[0, 5]])
    assert vectors_by_id(database, corpus.model.id, corpus.model.dim, [])[1].shape == (0, 64)
