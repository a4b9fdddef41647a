"""faiss's OpenMP threads, held to one while a single query is answered.

For one query faiss still opens parallel regions (the coarse quantizer's scan over the
centroids, decoding more than 1,000 float16 rows). Their worker threads then spin for a
while waiting for more work, on the cores PostgreSQL needs for the statement the search
sends next: on 2 cores a 10 % filtered search at 100k had a p95 of 9-13 ms against a
p50 of 3 ms, and 4-6 ms with one thread. One query gains nothing from the extra threads.

OpenMP keeps the thread count per calling thread, so this limits only the thread that
runs the search (each server request thread has its own), and restores it after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    import faiss

    before = faiss.omp_get_max_threads()
    if before == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
