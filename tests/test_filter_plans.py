"""Every faiss filter plan against exact filtered search in SQL, at 1 %, 10 % and 50 % selectivity."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from vector_data import SELECTIVITY_FILTERS, Corpus, make_corpus, recall_at

import sisyphus_db.search.faiss_plans as faiss_plans
from sisyphus_db.db.database import Database
from sisyphus_db.search.backends import exact_neighbours
from sisyphus_db.search.engine import SearchRequest, search
from sisyphus_db.search.filters import FrameFilter
from sisyphus_db.search.indexing import build_faiss_index
from sisyphus_db.search.queries import Query
from sisyphus_db.search.runs import frame_details

QUERIES = 8
DEPTH = 40


@pytest.fixture
def corpus(database: Database) -> Corpus:
    return make_corpus(database, n=5_000, d=32, n_sources=100, model_name="plans-32")


# The plans a selectivity can use, and the recall@10 each must keep there. filter-candidates
# alone cannot find k matches for a selective filter (that is why the planner moves on).
MINIMUM = {
    "exact-filtered": {0.01: 1.0, 0.10: 1.0, 0.50: 1.0},
    "id-selector": {0.01: 0.95, 0.10: 0.95, 0.50: 0.95},
    "over-fetch": {0.01: 0.95, 0.10: 0.95, 0.50: 0.95},
    "filter-candidates": {0.50: 0.95},
}


@pytest.mark.slow
def test_each_plan_against_exact_filtered_search(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="IVF32,PQ8x4").record
    for selectivity, where in SELECTIVITY_FILTERS.items():
        truths = [exact_neighbours(database, corpus.model, q, 10, where=where)[0].tolist()
                  for q in corpus.queries[:QUERIES]]
        city = where.split("'")[-2]
        for plan, minimum in MINIMUM.items():
            recalls = []
            for q, truth in zip(corpus.queries[:QUERIES], truths, strict=True):
                (ids, distances), info = faiss_plans.faiss_neighbours(
                    database, corpus.model, record, q, DEPTH, nprobe=None,
                    frame_filter=FrameFilter(database, where, corpus.model.id), plan=plan)
                assert info["strategy"].startswith(plan) and info["rerank"] == "memory"
                assert all(corpus.cities[int(i)] == city for i in ids)  # only allowed frames, ever
                assert list(distances) == sorted(distances)
                recalls.append(recall_at(ids[:10].tolist(), truth))
            if selectivity in minimum:
                assert np.mean(recalls) >= minimum[selectivity], (plan, selectivity, np.mean(recalls))


def test_the_planner_searches_selective_filters_in_memory(database: Database, corpus: Corpus,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    build_faiss_index(database, corpus.model, factory="IVF32,PQ8x4")
    # 10 %: kept on the ANN candidates when enough of them pass (faiss_plans.ENOUGH_PASSING_*),
    # which depends on the tuned depth; else searched exactly in memory.
    expected = {0.01: {"exact-filtered"}, 0.10: {"exact-filtered", "filter-candidates"},
                0.50: {"filter-candidates"}}
    for selectivity, where in SELECTIVITY_FILTERS.items():
        q = corpus.queries[0]
        outcome = search(database, corpus.model, Query(q, {"kind": "vector"}), SearchRequest(k=10, where=where,
                                                                                            save=False))
        assert outcome.params["strategy"] in expected[selectivity]
        truth = exact_neighbours(database, corpus.model, q, 10, where=where)[0].tolist()
        assert recall_at([hit.frame_id for hit in outcome.hits], truth) >= 0.9
    # A short probe (few candidates come back) is not mistaken for an exhausted filter.
    recalls = []
    for q in corpus.queries[:10]:
        outcome = search(database, corpus.model, Query(q, {"kind": "vector"}),
                         SearchRequest(k=10, where=SELECTIVITY_FILTERS[0.01], save=False, nprobe=1))
        assert len(outcome.hits) == 10
        truth = exact_neighbours(database, corpus.model, q, 10, where=SELECTIVITY_FILTERS[0.01])[0].tolist()
        recalls.append(recall_at([hit.frame_id for hit in outcome.hits], truth))
    assert np.mean(recalls) == 1.0
    # Above the exact threshold the allowed ids go through faiss's IDSelector instead.
    monkeypatch.setattr(faiss_plans, "EXACT_MAX", 10)
    outcome = search(database, corpus.model, Query(corpus.queries[0], {"kind": "vector"}),
                     SearchRequest(k=10, where=SELECTIVITY_FILTERS[0.01], save=False))
    assert outcome.params["strategy"] == "id-selector" and len(outcome.hits) == 10


def test_ids_without_the_vector_join_are_the_same_here(database: Database, corpus: Corpus) -> None:
    where = SELECTIVITY_FILTERS[0.10]
    with_join = FrameFilter(database, where, corpus.model.id).all_ids()
    without = FrameFilter(database, where, corpus.model.id).all_ids(with_vector=False)
    np.testing.assert_array_equal(with_join, without)
    assert with_join.size == pytest.approx(500, abs=60)


def test_first_passing_keeps_the_ranked_order_and_reads_the_metadata(database: Database, corpus: Corpus) -> None:
    where = SELECTIVITY_FILTERS[0.50]
    city = where.split("'")[-2]
    ranked = np.random.default_rng(3).permutation(corpus.ids)[:300]
    gone = next(int(i) for i in ranked[:20] if corpus.cities[int(i)] == city)
    with database.transaction() as conn:
        conn.execute(sa.text("DELETE FROM frames WHERE id = :id"), {"id": gone})
    frame_filter = FrameFilter(database, where, corpus.model.id)
    first, matched = frame_filter.first_passing(ranked, 12)
    allowed = [int(i) for i in ranked if corpus.cities[int(i)] == city and int(i) != gone]
    assert first.tolist() == allowed[:12]  # in the given order, not by id; a deleted frame never passes
    assert matched == len(allowed)
    assert set(frame_filter.details) == set(allowed[:12])
    assert frame_filter.details == frame_details(database, allowed[:12])
    none, zero = frame_filter.first_passing(ranked[:0], 5)
    assert none.size == 0 and zero == 0


def test_the_planner_answers_broad_filters_from_the_nearest_candidates(database: Database, corpus: Corpus) -> None:
    build_faiss_index(database, corpus.model, factory="IVF32,PQ8x4")
    for selectivity in (0.10, 0.50):
        where = SELECTIVITY_FILTERS[selectivity]
        recalls = []
        for q in corpus.queries[:QUERIES]:
            outcome = search(database, corpus.model, Query(q, {"kind": "vector"}),
                             SearchRequest(k=10, where=where, save=False))
            ids = [hit.frame_id for hit in outcome.hits]
            assert len(ids) == 10 and [hit.distance for hit in outcome.hits] == sorted(hit.distance for hit in outcome.hits)
            # the metadata the filter read is the table's
            assert {hit.frame_id: (hit.path, hit.source_uri, hit.tags) for hit in outcome.hits} == {
                frame_id: (d["path"], d["source_uri"], d["tags"]) for frame_id, d in frame_details(database, ids).items()}
            recalls.append(recall_at(ids, exact_neighbours(database, corpus.model, q, 10, where=where)[0].tolist()))
        assert np.mean(recalls) >= 0.95, (selectivity, recalls)


@pytest.mark.parametrize(("depth", "wanted"), [(200, 10), (5000, 10), (50, 10), (7, 3), (1, 1)])
def test_candidate_slices_cover_the_depth_in_order(depth: int, wanted: int) -> None:
    slices = faiss_plans._slices(depth, wanted)
    assert slices[0] == (0, min(depth, faiss_plans.FIRST_SLICE * wanted))
    assert [stop for _, stop in slices[:-1]] == [start for start, _ in slices[1:]]  # contiguous
    assert slices[-1][1] == depth and all(start < stop for start, stop in slices)
