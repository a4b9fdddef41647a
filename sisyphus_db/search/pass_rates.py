"""How often each filter lets frames through, remembered by the process that searches.

A broad filter is answered from the query's nearest candidates: one statement checks the
first of them. How many it should check depends on the filter's pass rate (about 16 x k
at 10 %, 3 x k at 50 %), and a filter that passes too few of them (1 %) is better served
by listing its allowed ids at once. The first search with a filter cannot know; the
following ones (the HTTP server, a notebook, a benchmark) use what the earlier ones saw.

A guess only sizes the planner's first step: a wrong one costs a second statement,
never a wrong result. Counts over a query's candidates decay, so the last searches weigh
most; a count over every frame (the allowed ids were listed) replaces them, so a filter
whose pass rate changed (new frames, new tags) is followed after one search.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

# Counts are scaled down past this many checked frames: the last few searches dominate.
MEMORY = 2_000
CAPACITY = 1_024  # filters remembered per process, least recently used forgotten first


class PassRates:
    """Passing and checked counts per filter key, thread-safe (the server searches on threads)."""

    def __init__(self, *, capacity: int = CAPACITY, memory: int = MEMORY) -> None:
        self.capacity = capacity
        self.memory = memory
        self._counts: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def guess(self, key: Hashable) -> float | None:
        """The filter's pass rate so far, or None when it has not been seen."""
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                return None
            self._counts.move_to_end(key)
        passed, checked = counts
        return passed / checked if checked > 0 else None

    def observe(self, key: Hashable, passed: int, checked: int, *, everything: bool = False) -> None:
        """`passed` of `checked` frames matched the filter. `everything`: every frame was checked
        (the allowed ids were listed), so the count replaces what was seen before."""
        if checked <= 0:
            return
        with self._lock:
            old_passed, old_checked = self._counts.pop(key, (0.0, 0.0))
            if everything:
                old_passed, old_checked = 0.0, 0.0
            total_passed, total_checked = old_passed + passed, old_checked + checked
            if total_checked > self.memory:
                scale = self.memory / total_checked
                total_passed, total_checked = total_passed * scale, float(self.memory)
            self._counts[key] = (total_passed, total_checked)
            while len(self._counts) > self.capacity:
                self._counts.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


PASS_RATES = PassRates()
