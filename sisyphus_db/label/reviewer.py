"""A simulated reviewer: the ground truth answers for a person going through discover rounds.

Starting from one positive, it asks `discover` for k frames, labels each positive or
negative as the truth says, and asks again, counting the frames it reviewed until it has
found 50 %, 80 % and all of the class. Without the tool a person reads the corpus in
random order; the t-th of R relevant frames among N then comes, on average, after
t (N + 1) / (R + 1) frames (evaluate.metrics.expected_frames_without_tool).

The labels it writes go under a label of its own, removed when it is done, and its
rounds are not stored as search runs: a simulation leaves the database as it found it.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.metrics import expected_frames_without_tool, frames_to_review
from sisyphus_db.label.discover import DEFAULT_METHOD, discover
from sisyphus_db.label.labels import add_labels, remove_labels
from sisyphus_db.search.filters import Where
from sisyphus_db.store.registry import StoredModel

REVIEW_FRACTIONS: tuple[float, ...] = (0.5, 0.8, 1.0)
REVIEWER = "simulated reviewer"


def fraction_key(fraction: float) -> str:
    return f"{round(100 * fraction)}%"


def review_targets(relevant: int, fractions: Sequence[float] = REVIEW_FRACTIONS) -> dict[str, int]:
    """How many relevant frames make each fraction of the class: ceil(f R), at least 1."""
    if relevant < 1:
        raise InputError("the class has no frame to find besides the one it starts from")
    return {fraction_key(f): max(1, math.ceil(f * relevant - 1e-9)) for f in fractions}


def random_order(candidates: int, relevant: int, fractions: Sequence[float] = REVIEW_FRACTIONS) -> dict[str, float]:
    """Frames a person reads, in expectation, in random order to reach each fraction."""
    return {key: round(expected_frames_without_tool(candidates, relevant, target), 1)
            for key, target in review_targets(relevant, fractions).items()}


def single_query(ranked_ids: Sequence[int], relevant: Collection[int],
                 fractions: Sequence[float] = REVIEW_FRACTIONS) -> dict[str, int | None]:
    """Frames read down one query's ranking to reach each fraction (None: the ranking falls short)."""
    wanted = set(relevant)
    return {key: frames_to_review(ranked_ids, wanted, target)
            for key, target in review_targets(len(wanted), fractions).items()}


@dataclass
class ReviewResult:
    method: str
    k: int
    candidates: int  # N: frames the reviewer could be shown (the corpus less the starting positive)
    relevant: int    # R: frames of the class still to find
    found: int
    reviewed: int
    rounds: int
    reached: dict[str, int | None]  # frames reviewed to reach each fraction (None: not reached)
    random: dict[str, float]
    single: dict[str, int | None] | None = None
    found_per_round: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def speedup(self, key: str) -> float | None:
        reached = self.reached.get(key)
        return None if not reached else self.random[key] / reached

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["seconds"] = round(self.seconds, 3)
        document["speedup"] = {key: None if self.speedup(key) is None else round(self.speedup(key) or 0.0, 2)
                               for key in self.reached}
        return document


def simulate_review(db: Database, model: StoredModel, truth: Collection[int], start: int, *, candidates: int,
                    method: str | None = None, k: int = 10, max_rounds: int | None = None,
                    where: Where | None = None, single: dict[str, int | None] | None = None,
                    on_round: Callable[[int, int, int], None] | None = None) -> ReviewResult:
    """Discover rounds of k from one positive until the whole class is found (or rounds run out).

    `truth` is every frame of the class (within `where`), `start` one of them, `candidates`
    the number of frames a person could be shown besides `start`.
    """
    relevant = set(int(i) for i in truth) - {int(start)}
    if int(start) not in {int(i) for i in truth}:
        raise InputError(f"the starting frame {start} is not one of the class's frames")
    targets = review_targets(len(relevant))
    if candidates < len(relevant):
        raise InputError(f"{candidates} candidate frames cannot hold {len(relevant)} relevant ones")
    if max_rounds is not None and max_rounds < 1:
        raise InputError(f"--rounds must be at least 1, got {max_rounds}")
    chosen = method or DEFAULT_METHOD
    label = f"simulated-{chosen}-{uuid.uuid4().hex[:10]}"
    started = time.perf_counter()
    reached: dict[str, int | None] = {key: None for key in targets}
    found = reviewed = rounds = 0
    per_round: list[int] = []
    add_labels(db, label, [start], rule=REVIEWER, created_by=REVIEWER)
    try:
        while found < len(relevant) and reviewed < candidates and (max_rounds is None or rounds < max_rounds):
            outcome = discover(db, model, label, k=k, where=where, method=chosen, save=False)
            if not outcome.hits:
                break
            rounds += 1
            hits = [hit.frame_id for hit in outcome.hits]
            for frame_id in hits:
                reviewed += 1
                if frame_id in relevant:
                    found += 1
                    for key, target in targets.items():
                        if found == target and reached[key] is None:
                            reached[key] = reviewed
            yes = [i for i in hits if i in relevant]
            no = [i for i in hits if i not in relevant]
            if yes:
                add_labels(db, label, yes, positive=True, rule=REVIEWER, created_by=REVIEWER)
            if no:
                add_labels(db, label, no, positive=False, rule=REVIEWER, created_by=REVIEWER)
            per_round.append(len(yes))
            if on_round is not None:
                on_round(rounds, reviewed, found)
    finally:
        remove_labels(db, label)
    return ReviewResult(method=chosen, k=k, candidates=candidates, relevant=len(relevant), found=found,
                        reviewed=reviewed, rounds=rounds, reached=reached,
                        random=random_order(candidates, len(relevant)), single=single,
                        found_per_round=per_round, seconds=time.perf_counter() - started)
