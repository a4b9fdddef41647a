"""The faiss index's refine store (sisyphus_db.ann.refine) against the registry and the table.

The store's file names and checksums live in `ann_indexes.params["refine"]` (no migration:
it is part of the faiss index's registration, written in the same row update). Each build
or update writes a new generation of files under new names, switches the registry row,
then deletes the old generation, so a reader that mapped the old files keeps valid ones.
PostgreSQL stays the truth: `verify_refine` compares the stored vectors with the table.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.ann.refine import (
    RefineFiles,
    RefineStore,
    RefineWriter,
    open_refine,
    refine_stem,
    remove_refine,
    write_refine,
)
from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError
from sisyphus_db.search.sidecar_files import new_generation
from sisyphus_db.store.indexes import IndexRecord
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import (
    FRAMES,
    VectorTable,
    frame_ids_of_model,
    model_vectors,
    stream_model_vectors,
    vector_count,
    vectors_by_id,
)

VERIFY_SAMPLE = 2_000  # rows compared with the table by a default `index verify`


def refine_files(record: IndexRecord) -> RefineFiles | None:
    params = (record.params or {}).get("refine")
    return RefineFiles.from_params(params) if params else None


def _new_stem(index_path: Path) -> Path:
    """The stem of a new generation of the index's refine store (a fresh name each time)."""
    return refine_stem(index_path, new_generation())


def write_new_refine(index_path: Path, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> RefineFiles:
    """A fresh store for a build: every (ascending) id with its vector."""
    return write_refine(_new_stem(index_path), ids, vectors=vectors)


def refine_from_table(db: Database, model: StoredModel, index_path: Path, *, table: VectorTable = FRAMES,
                      progress: Callable[[int], None] | None = None) -> RefineFiles:
    """A fresh store for a build, streamed from the table: PostgreSQL's vectors go straight into
    the mapped file (float16, as stored), so the build then trains, adds and tunes from that
    file and never holds all the vectors in memory."""
    rows = vector_count(db, model.id, table)
    with RefineWriter(_new_stem(index_path), model.dim * table.dim_factor, rows) as writer:
        # closed at once on failure: a suspended COPY would keep its connection busy
        with contextlib.closing(stream_model_vectors(db, model.id, model.dim, table=table,
                                                     progress=progress)) as stream:
            for ids, vectors in stream:
                writer.add(ids, vectors)
        return writer.finish()


def updated_refine(db: Database, model: StoredModel, record: IndexRecord, new_ids: npt.NDArray[np.int64],
                   new_vectors: npt.NDArray[np.float32], gone: npt.NDArray[np.int64],
                   index_ids: npt.NDArray[np.int64], *, table: VectorTable = FRAMES) -> RefineFiles:
    """The next generation: the old rows minus `gone`, plus the new frames, streamed block by block.

    An index registered before refine stores existed gets one built from the table.
    """
    files = refine_files(record)
    stem = _new_stem(Path(str(record.path)))
    if files is None:
        keep_ids = np.setdiff1d(index_ids, gone)
        ids_all, vecs_all = vectors_by_id(db, model.id, model.dim, keep_ids, table)
        ids_all = np.concatenate([ids_all, new_ids])
        vecs_all = np.concatenate([vecs_all, new_vectors]) if new_ids.size else vecs_all
        order = np.argsort(ids_all, kind="stable")
        return write_refine(stem, ids_all[order], vectors=vecs_all[order])
    old = open_refine(files)
    keep = ~np.isin(old.ids, gone)
    kept_ids = old.ids[keep]
    if new_ids.size and kept_ids.size and int(new_ids.min()) <= int(kept_ids.max()):
        # never the case through `index update` (new frames are above the watermark), but stay correct
        ids_all = np.concatenate([kept_ids, new_ids])
        vecs_all = np.concatenate([old.take(np.flatnonzero(keep)), new_vectors])
        order = np.argsort(ids_all, kind="stable")
        return write_refine(stem, ids_all[order], vectors=vecs_all[order])
    kept_rows = np.flatnonzero(keep)
    step = 262_144
    blocks: list[tuple[int, Any]] = [(start, old.vectors[kept_rows[start:start + step]])
                                     for start in range(0, kept_rows.size, step)]
    if new_ids.size:
        blocks.append((int(kept_rows.size), new_vectors))
    return _write_lazy(stem, np.concatenate([kept_ids, new_ids]), blocks, model.dim * table.dim_factor)


def _write_lazy(stem: Path, ids: npt.NDArray[np.int64], blocks: list[tuple[int, Any]], dim: int) -> RefineFiles:
    return write_refine(stem, ids, blocks, dim=dim)


_loaded: dict[tuple[str, str], RefineStore] = {}
_lock = threading.Lock()


def load_refine(record: IndexRecord) -> RefineStore | None:
    """The record's store, memory-mapped and cached per (file, checksum); None if it has none."""
    files = refine_files(record)
    if files is None:
        return None
    key = (files.vectors_path, files.ids_sha256 + files.vectors_sha256)
    with _lock:
        store = _loaded.get(key)
        if store is None or not Path(files.vectors_path).exists():
            for stale in [k for k in _loaded if k[0] == files.vectors_path]:
                del _loaded[stale]
            store = open_refine(files)
            _loaded[key] = store
        return store


def forget_refine(files: RefineFiles | None) -> None:
    if files is None:
        return
    with _lock:
        for key in [k for k in _loaded if k[0] == files.vectors_path]:
            del _loaded[key]


def drop_refine(files: RefineFiles | None) -> None:
    """Delete a generation's files (after the registry no longer points at them)."""
    if files is not None:
        forget_refine(files)
        remove_refine(files)


def verify_refine(db: Database, model: StoredModel, record: IndexRecord, index_ids: npt.NDArray[np.int64], *,
                  full: bool = False, sample: int | None = None, table: VectorTable = FRAMES) -> list[str]:
    """Problems with the refine store: files, checksums, ids against the index, vectors against the table."""
    files = refine_files(record)
    if files is None:
        return ["the index has no refine vectors (built before they existed; search fetches vectors from "
                "PostgreSQL): rebuild with `sisyphus index build`"]
    try:
        store = open_refine(files, check_vectors_sha=True)
    except AnnIndexError as exc:
        return [str(exc)]
    problems: list[str] = []
    if not np.array_equal(store.ids, np.unique(index_ids)):
        differ = np.setxor1d(store.ids, index_ids)
        problems.append(f"the refine store and the index hold different ids ({differ.size} differ, e.g. "
                        f"{', '.join(str(int(i)) for i in differ[:5])}): rebuild with `sisyphus index build`")
    live = frame_ids_of_model(db, model.id, table)
    common = np.intersect1d(store.ids, live)
    if full:
        ids, values = model_vectors(db, model.id, model.dim, table=table)
        keep = np.isin(ids, common)
        ids, values = ids[keep], values[keep]
    else:
        rng = np.random.default_rng()
        sample = VERIFY_SAMPLE if sample is None else sample
        chosen = common if common.size <= sample else np.sort(rng.choice(common, size=sample, replace=False))
        ids, values = vectors_by_id(db, model.id, model.dim, chosen, table)
    if ids.size:
        stored = store.vectors[store.rows_of(ids)]
        # halfvec -> float32 -> float16 is exact: the store must hold the table's values bit for bit
        bad = np.flatnonzero((stored != values.astype(np.float16)).any(axis=1))
        if bad.size:
            problems.append(f"{bad.size} of {ids.size} {'' if full else 'sampled '}refine vectors differ from the "
                            f"table (e.g. frame {int(ids[bad[0]])}): rebuild with `sisyphus index build`")
    return problems
