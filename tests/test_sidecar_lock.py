"""One writer of a model's faiss sidecar at a time, and what a killed writer left behind is removed."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from vector_data import Corpus, make_corpus

from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError
from sisyphus_db.search.index_verify import verify_faiss_index
from sisyphus_db.search.indexing import build_faiss_index, drop_index, index_path, update_faiss_index
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


def _leftovers(base: Path) -> list[Path]:
    """Files a build killed with SIGKILL leaves: an unregistered index generation, a refine store
    and the temporaries of atomic writes (names as the writers make them)."""
    stray = [base.with_name(f"{base.stem}.0123456789.faiss"),
             base.with_name(f"{base.name}.refine-abcdef0123.f16.npy"),
             base.with_name(f"{base.name}.refine-abcdef0123.ids.npy"),
             base.with_name(f".{base.stem}.0123456789.faiss.x7k2.tmp"),
             base.with_name(f".{base.name}.refine-abcdef0123.f16.npy.q1w2.tmp")]
    for file in stray:
        file.write_bytes(b"left by a build killed with SIGKILL")
    return stray


def _sidecar(base: Path) -> list[str]:
    return sorted(p.name for p in base.parent.iterdir() if p.name.startswith((base.stem + ".", "." + base.stem)))


def test_every_build_and_update_is_a_new_generation_and_removes_leftovers(database: Database, corpus: Corpus) -> None:
    base = index_path(database, corpus.model)
    base.parent.mkdir(parents=True, exist_ok=True)
    # Other files in the folder stay: another kind of this model, and another model whose name
    # merely starts like this one's (`<name>-<id>.<digits>...` is not a generation of it).
    others = [base.with_name(f"{base.stem}-regions.faiss"), base.with_name(f"{base.stem}.5-77.faiss"),
              base.with_name(f"{base.stem}.5-77.faiss.refine-abcdef0123.ids.npy")]
    for file in others:
        file.write_bytes(b"not ours")
    stray = _leftovers(base)
    first = build_faiss_index(database, corpus.model, factory="IVF8,Flat").record
    first_files = [Path(str(first.path)), *refine_files(first).paths()]  # type: ignore[union-attr]
    assert re.fullmatch(rf"{re.escape(base.stem)}\.[0-9a-f]{{10}}\.faiss", Path(str(first.path)).name)
    assert not any(file.exists() for file in stray) and all(file.exists() for file in others)
    assert _sidecar(base) == sorted(p.name for p in first_files + others[1:])

    stray = _leftovers(base)
    with database.transaction() as conn:  # a deleted frame: the update writes a new generation
        conn.exec_driver_sql(f"DELETE FROM frames WHERE id = {int(np.max(corpus.ids))}")
    updated = update_faiss_index(database, corpus.model).record
    files = [Path(str(updated.path)), *refine_files(updated).paths()]  # type: ignore[union-attr]
    assert updated.path != first.path and not any(p.exists() for p in first_files)  # the old generation is gone
    assert not any(file.exists() for file in stray) and all(file.exists() for file in others)
    assert _sidecar(base) == sorted(p.name for p in files + others[1:])
    assert verify_faiss_index(database, corpus.model, full=True).ok

    drop_index(database, corpus.model, "faiss")
    assert _sidecar(base) == sorted(p.name for p in others[1:])
    for file in others:
        file.unlink()


def test_a_failed_update_leaves_the_registered_generation_untouched(database: Database, corpus: Corpus,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sisyphus_db.search.indexing as indexing

    record = build_faiss_index(database, corpus.model, factory="IVF8,Flat").record
    base = index_path(database, corpus.model)
    before = _sidecar(base)
    with database.transaction() as conn:
        conn.exec_driver_sql(f"DELETE FROM frames WHERE id = {int(np.max(corpus.ids))}")

    def registry_down(*_: object, **__: object) -> None:
        raise AnnIndexError("the registry row could not be written")

    monkeypatch.setattr(indexing, "update_index", registry_down)
    with pytest.raises(AnnIndexError, match="could not be written"):
        update_faiss_index(database, corpus.model)
    assert _sidecar(base) == before  # the new generation was discarded, the registered one kept
    monkeypatch.undo()
    assert verify_faiss_index(database, corpus.model).problems == [
        f"1 ids in the index are no longer in the table (e.g. {int(np.max(corpus.ids))}): run `sisyphus index update`"]
    assert update_faiss_index(database, corpus.model).record.ntotal == record.ntotal - 1
