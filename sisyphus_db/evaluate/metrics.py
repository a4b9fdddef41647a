"""Retrieval, copy-detection and k-NN metrics.

Conventions shared by every function here:

* A ranked list holds result ids best first (rank 1 is index 0).
* Metrics that average over queries return a float in [0, 1]; an empty query list is an
  `InputError`, because an average over nothing would hide a wiring bug as a 0.
* Scores are "higher is more confident". A distance (L2, cosine distance) is turned
  into a score with `score_from_distance`, i.e. negated: only the order of predictions
  matters to µAP, and negation keeps that order exactly without a scale to choose.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sisyphus_db.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "KnnAccuracy",
    "expected_frames_without_tool",
    "frames_to_review",
    "knn_accuracy",
    "mean_reciprocal_rank",
    "micro_average_precision",
    "precision_at_k",
    "recall_at_k",
    "recall_of_set",
    "review_speedup",
    "score_from_distance",
]


def _check_k(k: int, name: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"{name} must be a positive integer, got {k!r}")


def _as_set(relevant: set[int] | frozenset[int] | int) -> set[int] | frozenset[int]:
    # Copy detection has exactly one relevant reference per query, so a bare id is the
    # common case; a set allows several acceptable answers (any one of them counts).
    if isinstance(relevant, (set, frozenset)):
        return relevant
    return {relevant}


def _check_pairs(ranked: Sequence[Sequence[int]], relevant: Sequence[object]) -> None:
    if len(ranked) != len(relevant):
        raise InputError(f"got {len(ranked)} ranked lists but {len(relevant)} relevance entries")
    if len(ranked) == 0:
        raise InputError("no queries to evaluate")


def _first_hit_rank(ranked_ids: Sequence[int], wanted: set[int] | frozenset[int]) -> int | None:
    """1-based rank of the first relevant id, or None when none is in the list."""
    for position, item in enumerate(ranked_ids, start=1):
        if item in wanted:
            return position
    return None


def recall_at_k(
    ranked: Sequence[Sequence[int]],
    relevant: Sequence[set[int] | frozenset[int] | int],
    k: int,
) -> float:
    """Fraction of queries with at least one relevant id among their top `k` results.

    This is the copy-detection r@k of the Active Indexing paper: each query has one
    relevant reference (pass a bare id), and a query scores 1 when that reference is in
    its top k, else 0. When a set is given, any member in the top k makes a hit (it is
    "success at k", not the fraction of the set retrieved; use `recall_of_set` for that).
    A query with an empty relevant set is an `InputError`: distractor queries have no
    answer and belong in µAP, not in r@k.
    """
    _check_k(k)
    _check_pairs(ranked, relevant)
    hits = 0
    for ranked_ids, wanted in zip(ranked, relevant, strict=True):
        wanted_set = _as_set(wanted)
        if not wanted_set:
            raise InputError("a query has an empty relevant set; leave it out of recall@k")
        if _first_hit_rank(ranked_ids[:k], wanted_set) is not None:
            hits += 1
    return hits / len(ranked)


def mean_reciprocal_rank(
    ranked: Sequence[Sequence[int]],
    relevant: Sequence[set[int] | frozenset[int] | int],
    cutoff: int | None = None,
) -> float:
    """Mean over queries of 1/rank of the first relevant result (0 when there is none).

    With `cutoff`, only the top `cutoff` results count (MRR@cutoff), so a first hit at
    a rank past the cutoff scores 0.
    """
    if cutoff is not None:
        _check_k(cutoff, "cutoff")
    _check_pairs(ranked, relevant)
    total = 0.0
    for ranked_ids, wanted in zip(ranked, relevant, strict=True):
        wanted_set = _as_set(wanted)
        if not wanted_set:
            raise InputError("a query has an empty relevant set; leave it out of MRR")
        window = ranked_ids if cutoff is None else ranked_ids[:cutoff]
        rank = _first_hit_rank(window, wanted_set)
        if rank is not None:
            total += 1.0 / rank
    return total / len(ranked)


def score_from_distance(distance: float) -> float:
    """Confidence score for µAP from a distance: smaller distance = higher score."""
    return -float(distance)


def micro_average_precision(
    predictions: Iterable[tuple[Hashable, Hashable, float]],
    ground_truth: Mapping[Hashable, Hashable],
    n_positive_queries: int,
) -> float:
    """Copy-detection micro average precision (µAP), as in DISC21 / Active Indexing.

    `predictions` are (query_id, reference_id, score) triples from *all* queries,
    distractor queries included (they have no entry in `ground_truth`, so every one of
    their predictions is a false positive). `ground_truth` maps each query that has a
    true match to its reference. `n_positive_queries` is the number of such queries
    and normalises recall, so a query whose match was never predicted still costs
    recall.

    Rules, chosen to match the DISC21 reference evaluation:

    * A repeated (query, reference) pair counts once, with its highest score.
    * Predictions are sorted by score, highest first; on equal scores false positives
      go first, so a method cannot gain by giving everything the same score.
    * After each prediction i: precision_i = TP_i / i and recall_i = TP_i / n_positive.
    * AP = sum_i (recall_i - recall_{i-1}) * precision_i, with recall_0 = 0: the area
      under the step-shaped precision-recall curve, without interpolation. Only true
      positives raise recall, so this is the mean over the positives of the precision at
      the rank where each was found, divided by `n_positive_queries`.
    """
    if isinstance(n_positive_queries, bool) or not isinstance(n_positive_queries, int):
        raise InputError(f"n_positive_queries must be an integer, got {n_positive_queries!r}")
    if n_positive_queries < 1:
        raise InputError("n_positive_queries must be at least 1")
    if n_positive_queries < len(ground_truth):
        raise InputError(
            f"n_positive_queries is {n_positive_queries} but ground truth has "
            f"{len(ground_truth)} queries with a match"
        )

    best: dict[tuple[Hashable, Hashable], float] = {}
    for query_id, reference_id, score in predictions:
        key = (query_id, reference_id)
        value = float(score)
        if value != value:  # NaN would make the sort order meaningless
            raise InputError(f"prediction {key!r} has a NaN score")
        if key not in best or value > best[key]:
            best[key] = value

    judged = [
        (score, query_id in ground_truth and ground_truth[query_id] == reference_id)
        for (query_id, reference_id), score in best.items()
    ]
    # Sort key (-score, is_correct): highest score first, wrong before right on ties.
    judged.sort(key=lambda item: (-item[0], item[1]))

    true_positives = 0
    area = 0.0
    for position, (_, correct) in enumerate(judged, start=1):
        if correct:
            true_positives += 1
            # Recall rises by exactly 1/n_positive at each true positive.
            area += (true_positives / position) / n_positive_queries
    logger.debug(
        "µAP over %d predictions, %d true positives of %d",
        len(judged),
        true_positives,
        n_positive_queries,
    )
    return area


def precision_at_k(
    ranked_ids: Sequence[int], relevant_set: set[int] | frozenset[int], k: int
) -> float:
    """Fraction of the top `k` slots holding a relevant id.

    The denominator is always `k`: a result list shorter than k counts its missing
    slots as misses, so a search that returns too little is not rewarded.
    """
    _check_k(k)
    hits = sum(1 for item in ranked_ids[:k] if item in relevant_set)
    return hits / k


def recall_of_set(found: Iterable[int], relevant: set[int] | frozenset[int]) -> float:
    """Fraction of the relevant ids that appear in `found` (duplicates count once)."""
    if not relevant:
        raise InputError("the relevant set is empty")
    return len(set(found) & set(relevant)) / len(relevant)


@dataclass(frozen=True)
class KnnAccuracy:
    """Leave-one-out k-NN classification accuracy.

    `overall` is the fraction of all queries classified right; `per_class[c]` the same
    fraction among queries whose true label is c; `per_class_counts[c]` how many
    queries have label c (so per-class figures can be weighed).
    """

    overall: float
    per_class: dict[str, float]
    per_class_counts: dict[str, int]


def _vote(neighbour_labels: Sequence[str]) -> str:
    """Majority label; a tie goes to the tied label whose first vote is nearest.

    Taking the nearest neighbour among the tied classes keeps the rule deterministic
    and uses the ranking information a plain count throws away.
    """
    counts = Counter(neighbour_labels)
    top = max(counts.values())
    for label in neighbour_labels:  # nearest first, so the first tied label wins
        if counts[label] == top:
            return label
    raise AssertionError("unreachable: a non-empty vote always has a winner")


def knn_accuracy(
    labels: Sequence[str],
    neighbour_lists: Sequence[Sequence[int]],
    k: int,
) -> KnnAccuracy:
    """Leave-one-out k-NN accuracy, as in the VideoSimilarity experiments.

    Item i is a query whose neighbours are `neighbour_lists[i]`: indices into `labels`,
    nearest first, with i itself already removed. The first `k` neighbours vote (fewer
    if the list is shorter); the majority label is the prediction, ties broken by
    `_vote`'s nearest-neighbour rule.
    """
    _check_k(k)
    if len(labels) != len(neighbour_lists):
        raise InputError(f"got {len(labels)} labels but {len(neighbour_lists)} neighbour lists")
    if not labels:
        raise InputError("no queries to evaluate")

    correct_by_class: Counter[str] = Counter()
    count_by_class: Counter[str] = Counter()
    for query, neighbours in enumerate(neighbour_lists):
        window = list(neighbours[:k])
        if not window:
            raise InputError(f"query {query} has no neighbours")
        for index in window:
            if index == query:
                raise InputError(f"query {query} lists itself as a neighbour")
            if not 0 <= index < len(labels):
                raise InputError(f"query {query} has neighbour index {index} out of range")
        truth = labels[query]
        count_by_class[truth] += 1
        if _vote([labels[index] for index in window]) == truth:
            correct_by_class[truth] += 1

    per_class = {label: correct_by_class[label] / n for label, n in count_by_class.items()}
    overall = sum(correct_by_class.values()) / len(labels)
    return KnnAccuracy(overall=overall, per_class=per_class, per_class_counts=dict(count_by_class))


def frames_to_review(
    ranked_ids: Sequence[int],
    relevant_set: set[int] | frozenset[int],
    target_found: int,
) -> int | None:
    """How many results a person reads, top down, until `target_found` relevant ones.

    Returns the 1-based rank of the `target_found`-th relevant id, or None when the
    list holds fewer relevant ids than that (the tool alone does not get there).
    """
    _check_k(target_found, "target_found")
    found = 0
    for position, item in enumerate(ranked_ids, start=1):
        if item in relevant_set:
            found += 1
            if found == target_found:
                return position
    return None


def expected_frames_without_tool(n_total: int, n_relevant: int, target_found: int) -> float:
    """Expected frames scanned in random order to find `target_found` relevant ones.

    Reading a shuffled corpus of N frames with R relevant ones, the position of the
    t-th relevant frame has expectation t * (N + 1) / (R + 1) (the R relevant frames cut
    the N - R others into R + 1 gaps of equal expected size). This is what a person
    without the tool pays; it grows as the scene gets rarer.
    """
    _check_k(target_found, "target_found")
    if isinstance(n_relevant, bool) or not isinstance(n_relevant, int) or n_relevant < 0:
        raise InputError(f"n_relevant must be a non-negative integer, got {n_relevant!r}")
    if isinstance(n_total, bool) or not isinstance(n_total, int) or n_total < n_relevant:
        raise InputError(f"n_total must be an integer of at least n_relevant, got {n_total!r}")
    if target_found > n_relevant:
        raise InputError(
            f"target_found ({target_found}) exceeds the number of relevant frames ({n_relevant})"
        )
    return target_found * (n_total + 1) / (n_relevant + 1)


def review_speedup(frames_with_tool: int | None, frames_without_tool: float) -> float | None:
    """How many times fewer frames the tool makes a person read (None if it falls short)."""
    if frames_with_tool is None:
        return None
    if frames_with_tool < 1:
        raise InputError(f"frames_with_tool must be at least 1, got {frames_with_tool!r}")
    return frames_without_tool / frames_with_tool
