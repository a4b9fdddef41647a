"""Every faiss filter plan against exact filtered search in SQL, at 1 %, 10 % and 50 % selectivity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from scipy.stats import binom
from vector_data import SELECTIVITY_FILTERS, Corpus, make_corpus, recall_at

import sisyphus_db.search.faiss_plans as faiss_plans
from sisyphus_db.db.database import Database
from sisyphus_db.search.backends import exact_neighbours
from sisyphus_db.search.engine import SearchRequest, search
from sisyphus_db.search.filters import FrameFilter
from sisyphus_db.search.indexing import build_faiss_index
from sisyphus_db.search.pass_rates import PASS_RATES, PassRates
from sisyphus_db.search.queries import Query
from sisyphus_db.search.runs import frame_details
from sisyphus_db.store.indexes import update_index

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


def _index_at_depth_200(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="IVF32,PQ8x4").record
    update_index(database, record.id, params={**record.params, "rerank_k": 200})


def _search(database: Database, corpus: Corpus, q: np.ndarray, where: str) -> tuple[list[int], dict[str, Any]]:
    outcome = search(database, corpus.model, Query(q, {"kind": "vector"}), SearchRequest(k=10, where=where, save=False))
    return [hit.frame_id for hit in outcome.hits], outcome.params


def test_the_planner_sizes_the_filter_check_by_the_pass_rate_it_saw(database: Database, corpus: Corpus) -> None:
    _index_at_depth_200(database, corpus)
    selective, broad = SELECTIVITY_FILTERS[0.01], SELECTIVITY_FILTERS[0.50]
    first = {where: _search(database, corpus, corpus.queries[0], where)[1] for where in (selective, broad)}
    # First sight: FIRST_SLICE x k candidates checked (the 1 % filter then lists its ids).
    assert first[selective]["filter_checked"] == first[broad]["filter_checked"] == faiss_plans.FIRST_SLICE * 10
    for q in corpus.queries[1:QUERIES]:
        for where in (selective, broad):
            ids, params = _search(database, corpus, q, where)
            truth = exact_neighbours(database, corpus.model, q, 10, where=where)[0].tolist()
            if where == selective:  # known to be selective: its ids are listed at once, no candidate checked
                assert params["strategy"] == "exact-filtered" and params["filter_checked"] == 0
                assert ids == truth
            else:  # known to pass half: a few dozen candidates hold 10 passing ones
                assert params["strategy"] == "filter-candidates"
                assert 10 <= params["filter_checked"] <= 40
                assert recall_at(ids, truth) >= 0.9


def test_a_wrong_pass_rate_costs_time_never_results(database: Database, corpus: Corpus) -> None:
    _index_at_depth_200(database, corpus)
    selective, broad = SELECTIVITY_FILTERS[0.01], SELECTIVITY_FILTERS[0.50]
    key = {where: FrameFilter(database, where, corpus.model.id).key for where in (selective, broad)}
    q = corpus.queries[2]
    # The data changed under the planner's memory: the 1 % filter is believed to pass 90 %,
    # the 50 % one 0.1 %.
    PASS_RATES.observe(key[selective], 900, 1_000)
    PASS_RATES.observe(key[broad], 1, 1_000)
    for where in (selective, broad):
        ids, params = _search(database, corpus, q, where)
        truth = exact_neighbours(database, corpus.model, q, 10, where=where)[0].tolist()
        assert recall_at(ids, truth) >= 0.9 and len(ids) == 10
    # ... and one search corrects each guess (the allowed ids were listed and counted).
    assert PASS_RATES.guess(key[selective]) == pytest.approx(0.01, abs=0.01)
    assert PASS_RATES.guess(key[broad]) == pytest.approx(0.5, abs=0.05)
    assert _search(database, corpus, q, broad)[1]["strategy"] == "filter-candidates"


def test_pass_rates_decay_and_forget_the_least_recent() -> None:
    rates = PassRates(capacity=2, memory=100)
    assert rates.guess("a") is None
    rates.observe("a", 5, 0)  # nothing checked: nothing learnt
    assert rates.guess("a") is None
    rates.observe("a", 10, 100)
    assert rates.guess("a") == pytest.approx(0.1)
    rates.observe("a", 90, 100)  # the newest counts as much as all that came before
    assert rates.guess("a") == pytest.approx(0.5)
    rates.observe("a", 2, 1_000, everything=True)  # every frame counted: what came before is void
    assert rates.guess("a") == pytest.approx(0.002)
    rates.observe("b", 1, 10)
    rates.guess("a")  # used: "b" is now the least recent
    rates.observe("c", 1, 10)
    assert rates.guess("b") is None and rates.guess("a") is not None and rates.guess("c") == pytest.approx(0.1)


@pytest.mark.parametrize(("rate", "first"), [(0.5, 33), (0.1, 164), (0.01, 200), (1.0, 17)])
def test_the_first_slice_follows_the_pass_rate(rate: float, first: int) -> None:
    slices = faiss_plans._slices(200, 10, rate)
    assert slices[0] == (0, first) and slices[-1][1] == 200
    # at that rate the first slice holds 10 passing frames in at least 95 % of searches
    if first < 200:
        assert 1 - binom.cdf(9, first, rate) >= 0.95
