"""Metrics on small cases whose answers are worked out by hand in the comments."""

from __future__ import annotations

import itertools

import pytest

from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.metrics import (
    KnnAccuracy,
    expected_frames_without_tool,
    frames_to_review,
    knn_accuracy,
    mean_reciprocal_rank,
    micro_average_precision,
    precision_at_k,
    recall_at_k,
    recall_of_set,
    review_speedup,
    score_from_distance,
)


def _list_with(item: int, rank: int | None, filler_start: int) -> list[int]:
    """100 results of filler ids with `item` placed at 1-based `rank` (or absent)."""
    results = list(range(filler_start, filler_start + 100))
    if rank is not None:
        results[rank - 1] = item
    return results


# Four copy-detection queries whose true reference (7) is at rank 1, 7, 50 and nowhere.
RANKED = [
    _list_with(7, 1, 1000),
    _list_with(7, 7, 2000),
    _list_with(7, 50, 3000),
    _list_with(7, None, 4000),
]
RELEVANT = [7, 7, 7, 7]


def test_recall_at_1_10_100() -> None:
    assert recall_at_k(RANKED, RELEVANT, 1) == 0.25  # only the rank-1 query
    assert recall_at_k(RANKED, RELEVANT, 10) == 0.5  # ranks 1 and 7
    assert recall_at_k(RANKED, RELEVANT, 100) == 0.75  # ranks 1, 7 and 50


def test_recall_at_k_with_a_set_counts_any_member() -> None:
    ranked = [[5, 1, 2], [3, 4, 5], [9, 8, 7]]
    relevant: list[set[int] | int] = [5, 5, {1, 7}]
    assert recall_at_k(ranked, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, relevant, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, relevant, 3) == 1.0  # 7 is third for the last query


def test_mean_reciprocal_rank() -> None:
    # (1/1 + 1/7 + 1/50 + 0) / 4
    assert mean_reciprocal_rank(RANKED, RELEVANT) == pytest.approx((1 + 1 / 7 + 0.02) / 4)
    # With a cutoff of 10 the rank-50 hit no longer counts.
    assert mean_reciprocal_rank(RANKED, RELEVANT, cutoff=10) == pytest.approx((1 + 1 / 7) / 4)


def test_ranking_metrics_reject_bad_input() -> None:
    with pytest.raises(InputError, match=r"^k must be a positive integer, got 0$"):
        recall_at_k(RANKED, RELEVANT, 0)
    with pytest.raises(InputError, match=r"^got 4 ranked lists but 3 relevance entries$"):
        recall_at_k(RANKED, RELEVANT[:3], 1)
    with pytest.raises(InputError, match=r"^no queries to evaluate$"):
        mean_reciprocal_rank([], [])
    with pytest.raises(InputError, match="empty relevant set"):
        recall_at_k([[1]], [set()], 1)


def test_micro_ap_with_distractors_and_a_wrong_top_match() -> None:
    truth = {"q1": "r1", "q2": "r2", "q3": "r3", "q4": "r4"}  # q4 is never predicted
    predictions = [
        ("q1", "r1", 0.9),  # 1st: TP, precision 1/1
        ("d1", "r5", 0.8),  # 2nd: distractor query, FP
        ("q2", "r9", 0.7),  # 3rd: q2's wrong top match, FP
        ("q2", "r2", 0.6),  # 4th: TP, precision 2/4
        ("d2", "r1", 0.5),  # 5th: distractor, FP even though r1 is a real reference
        ("q3", "r3", 0.4),  # 6th: TP, precision 3/6
    ]
    # Each TP raises recall by 1/4: AP = (1 + 1/2 + 1/2) / 4.
    assert micro_average_precision(predictions, truth, 4) == pytest.approx(0.5)
    # Input order does not matter, only the scores do.
    assert micro_average_precision(predictions[::-1], truth, 4) == pytest.approx(0.5)
    # Normalising by 3 positives instead: (1 + 1/2 + 1/2) / 3.
    three = {key: truth[key] for key in ("q1", "q2", "q3")}
    assert micro_average_precision(predictions, three, 3) == pytest.approx(2 / 3)


def test_micro_ap_ties_put_false_positives_first() -> None:
    predictions = [("q", "r", 0.5), ("d", "x", 0.5)]
    # The FP goes first on the tie, so the TP is found at precision 1/2.
    assert micro_average_precision(predictions, {"q": "r"}, 1) == pytest.approx(0.5)


def test_micro_ap_counts_a_repeated_pair_once_with_its_best_score() -> None:
    predictions = [("q", "r", 0.1), ("d", "x", 0.5), ("q", "r", 0.9)]
    assert micro_average_precision(predictions, {"q": "r"}, 1) == pytest.approx(1.0)


def test_micro_ap_from_distances() -> None:
    # Distances: q's true match is closer than the distractor's, so it ranks first.
    predictions = [("q", "r", score_from_distance(0.2)), ("d", "x", score_from_distance(0.5))]
    assert micro_average_precision(predictions, {"q": "r"}, 1) == pytest.approx(1.0)
    assert score_from_distance(0.2) > score_from_distance(0.5)


def test_micro_ap_rejects_bad_counts() -> None:
    with pytest.raises(InputError, match=r"^n_positive_queries must be at least 1$"):
        micro_average_precision([], {}, 0)
    with pytest.raises(
        InputError, match=r"^n_positive_queries is 1 but ground truth has 2 queries with a match$"
    ):
        micro_average_precision([], {"a": 1, "b": 2}, 1)


def test_precision_at_k_and_recall_of_set() -> None:
    ranked = [1, 2, 3, 4]
    relevant = {2, 4, 9}
    assert precision_at_k(ranked, relevant, 2) == 0.5
    assert precision_at_k(ranked, relevant, 4) == 0.5
    assert precision_at_k(ranked, relevant, 8) == 0.25  # missing slots are misses
    assert recall_of_set([2, 2, 4, 7], relevant) == pytest.approx(2 / 3)
    with pytest.raises(InputError, match=r"^the relevant set is empty$"):
        recall_of_set([1], set())


def test_knn_accuracy_with_ties() -> None:
    labels = ["car", "car", "bus", "bus", "bike"]
    neighbours = [
        [1, 2],  # car, bus: tie, the nearest (car) wins -> right
        [2, 0],  # bus, car: tie, the nearest (bus) wins -> wrong
        [3, 4],  # bus, bike: tie -> bus -> right
        [2, 0, 1],  # k=2 sees bus, car: tie -> bus -> right
        [0, 1],  # car, car -> wrong
    ]
    result = knn_accuracy(labels, neighbours, 2)
    assert result == KnnAccuracy(
        overall=0.6,
        per_class={"car": 0.5, "bus": 1.0, "bike": 0.0},
        per_class_counts={"car": 2, "bus": 2, "bike": 1},
    )
    # With k=3, query 3 sees bus, car, car -> car -> wrong; query 1 sees bus, car only.
    assert knn_accuracy(labels, neighbours, 3).overall == pytest.approx(2 / 5)


def test_knn_accuracy_rejects_the_query_as_its_own_neighbour() -> None:
    with pytest.raises(InputError, match=r"^query 0 lists itself as a neighbour$"):
        knn_accuracy(["a", "b"], [[0], [0]], 1)
    with pytest.raises(InputError, match=r"^query 1 has neighbour index 5 out of range$"):
        knn_accuracy(["a", "b"], [[1], [5]], 1)


def test_frames_to_review() -> None:
    ranked = [10, 3, 7, 4, 8, 2]
    relevant = {3, 4, 2}
    assert frames_to_review(ranked, relevant, 1) == 2
    assert frames_to_review(ranked, relevant, 2) == 4
    assert frames_to_review(ranked, relevant, 3) == 6
    assert frames_to_review(ranked, relevant, 4) is None


def test_expected_frames_without_tool() -> None:
    assert expected_frames_without_tool(1000, 9, 1) == pytest.approx(100.1)  # 1 * 1001 / 10
    assert expected_frames_without_tool(1000, 9, 3) == pytest.approx(300.3)
    assert expected_frames_without_tool(10, 10, 10) == pytest.approx(10.0)
    # The rarer the scene, the longer the search: 1 in 10_000 vs 1 in 100.
    assert expected_frames_without_tool(10_000, 1, 1) > expected_frames_without_tool(10_000, 100, 1)
    with pytest.raises(
        InputError, match=r"^target_found \(3\) exceeds the number of relevant frames \(2\)$"
    ):
        expected_frames_without_tool(10, 2, 3)


def test_expected_frames_without_tool_matches_brute_force() -> None:
    # Average, over every placement of R relevant frames among N, of the position of the
    # t-th relevant one.
    n_total, n_relevant = 7, 3
    placements = list(itertools.combinations(range(1, n_total + 1), n_relevant))
    for target in (1, 2, 3):
        mean = sum(p[target - 1] for p in placements) / len(placements)
        assert expected_frames_without_tool(n_total, n_relevant, target) == pytest.approx(mean)


def test_review_speedup() -> None:
    assert review_speedup(4, 100.0) == 25.0
    assert review_speedup(None, 100.0) is None
