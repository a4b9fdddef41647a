"""A single query holds faiss to one OpenMP thread, only in the thread that runs it."""

from __future__ import annotations

import threading

import faiss
import pytest

from sisyphus_db.ann.threads import one_thread


def test_one_thread_limits_only_the_calling_thread_and_restores() -> None:
    before = faiss.omp_get_max_threads()
    if before < 2:
        pytest.skip("one core: nothing to limit")
    seen_elsewhere: list[int] = []
    with one_thread():
        assert faiss.omp_get_max_threads() == 1
        other = threading.Thread(target=lambda: seen_elsewhere.append(faiss.omp_get_max_threads()))
        other.start()
        other.join()
        with one_thread():  # nested: still one, and the outer block restores
            assert faiss.omp_get_max_threads() == 1
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    assert seen_elsewhere == [before]  # a server's other request threads keep every core


def test_one_thread_restores_after_an_error() -> None:
    before = faiss.omp_get_max_threads()
    with pytest.raises(RuntimeError), one_thread():
        raise RuntimeError("search failed")
    assert faiss.omp_get_max_threads() == before
