"""One writer of a model's faiss sidecar at a time, and what a killed writer left behind is removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from vector_data import Corpus, make_corpus

from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError
from sisyphus_db.search.indexing import build_faiss_index, drop_index, index_path, update_faiss_index, verify_faiss_index
from sisyphus_db.search.refine_sidecar import refine_files
from sisyphus_db.search.sidecar_lock import sidecar_writer


@pytest.fixture
def corpus(database: Database) -> Corpus:
    return make_corpus(database, n=1_500, d=16, n_sources=10, model_name="lock-16")


def test_a_second_writer_fails_at_once_and_others_are_not_blocked(database: Database, corpus: Corpus) -> None:
    build_faiss_index(database, corpus.model, factory="IVF8,Flat")
    other = make_corpus(database, n=300, d=16, n_sources=3, model_name="lock-other-16")
    with sidecar_writer(database, corpus.model, "frames"):
        for write in (lambda: build_faiss_index(database, corpus.model, factory="IVF8,Flat"),
                      lambda: update_faiss_index(database, corpus.model),
                      lambda: drop_index(database, corpus.model, "faiss")):
            with pytest.raises(AnnIndexError, match="another index build, update or drop of lock-16 is running"):
                write()
        build_faiss_index(database, other.model, factory="Flat")  # another model: its own lock
    # released: the refused writers changed nothing, and the next one runs
    assert verify_faiss_index(database, corpus.model).ok
    assert build_faiss_index(database, corpus.model, factory="IVF8,Flat").record.ntotal == corpus.ids.size


def test_the_lock_is_released_when_the_writer_fails(database: Database, corpus: Corpus) -> None:
    with pytest.raises(AnnIndexError):
        update_faiss_index(database, corpus.model)  # no index yet: fails inside the lock
    build_faiss_index(database, corpus.model, factory="IVF8,Flat")  # not blocked by the failed one


def _leftovers(path: Path) -> list[Path]:
    stray = [path.with_name(f"{path.name}.refine-killed0001.vectors.npy"),
             path.with_name(f"{path.name}.refine-killed0001.ids.npy"),
             path.with_name(f".{path.name}.x7k2.tmp")]
    for file in stray:
        file.write_bytes(b"left by a build killed with SIGKILL")
    return stray


def test_build_and_update_remove_what_a_killed_writer_left(database: Database, corpus: Corpus) -> None:
    path = index_path(database, corpus.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    unrelated = path.with_name("someone-else.faiss.refine-abc.ids.npy")  # another index's files stay
    unrelated.write_bytes(b"not ours")
    stray = _leftovers(path)
    record = build_faiss_index(database, corpus.model, factory="IVF8,Flat").record
    assert not any(file.exists() for file in stray) and unrelated.exists()
    kept = refine_files(record)
    assert kept is not None and all(p.exists() for p in kept.paths())

    stray = _leftovers(path)
    with database.transaction() as conn:  # a new frame, so the update writes a new generation
        conn.exec_driver_sql(f"DELETE FROM frames WHERE id = {int(np.max(corpus.ids))}")
    updated = update_faiss_index(database, corpus.model).record
    assert not any(file.exists() for file in stray)
    files = sorted(p.name for p in path.parent.glob(f"{path.name}.refine-*"))
    current = refine_files(updated)
    assert current is not None and files == sorted(p.name for p in current.paths())
    assert verify_faiss_index(database, corpus.model, full=True).ok
    unrelated.unlink()
