"""The faiss indexes the server holds in memory, swapped atomically when the registry changes.

Every model's index is loaded once. At most once per `ttl_s` one request looks at the
registry row; when `index build` or `index update` registered a new file (a new sha256),
that request loads it while every other request keeps searching the index it already
has, and then the reference is swapped: a search that started on the old index finishes
on it. The file is only accepted when its bytes hash to the registry's sha256 and it was
not replaced while being read, so a half-written file or a file whose registry row is not
committed yet is never served (the old index keeps serving until the two agree).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError
from sisyphus_db.store.indexes import IndexRecord, find_index
from sisyphus_db.store.registry import StoredModel

logger = logging.getLogger(__name__)

NEWER_COUNT_CAP = 100_000  # "more than this many frames are not indexed" is enough to say


class NoIndexError(AnnIndexError):
    """The model has no faiss index registered at all (as opposed to a registered one that cannot be served)."""


@dataclass(frozen=True)
class LoadedIndex:
    record: IndexRecord
    index: Any
    store: Any  # the index's refine store (float16 vectors by frame id), None for older indexes
    newer: int  # frames with a vector above the watermark: not searched until `index update`
    loaded_at: float

    @property
    def warnings(self) -> list[str]:
        if not self.newer:
            return []
        count = f"more than {NEWER_COUNT_CAP}" if self.newer > NEWER_COUNT_CAP else str(self.newer)
        return [f"{count} frames are newer than the faiss index and not searched: run `sisyphus index update`"]


def _identity(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_ino, info.st_size, info.st_mtime_ns


def load_verified(record: IndexRecord) -> tuple[Any, Any]:
    """The index file of a registry row, only if it is exactly the registered file, and its refine store.

    Both are memory-mapped: a file replaced or deleted later (the next generation) stays
    valid in this mapping, so a search that holds them finishes on them.
    """
    from sisyphus_db.ann.files import file_sha256, read_index
    from sisyphus_db.ann.refine import open_refine
    from sisyphus_db.search.refine_sidecar import refine_files

    path = Path(str(record.path))
    try:
        before = _identity(path)
        digest = file_sha256(path)
    except OSError:
        raise AnnIndexError(f"index file {path} does not exist: rebuild with `sisyphus index build`") from None
    if digest != str(record.sha256).lower():
        raise AnnIndexError(f"index file {path} does not match its registry checksum (yet)")
    index = read_index(path, mmap=True)
    files = refine_files(record)
    store = open_refine(files) if files is not None else None  # checks the ids file's checksum
    try:
        after = _identity(path)
    except OSError:
        after = None
    if after != before:
        # Replaced between hashing and reading: what was read may be the newer file.
        raise AnnIndexError(f"index file {path} was replaced while it was read")
    return index, store


class IndexCache:
    def __init__(self, db: Database, ttl_s: float = 1.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._slots: dict[int, LoadedIndex] = {}
        self._checked: dict[int, float] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def loaded(self) -> dict[int, LoadedIndex]:
        return dict(self._slots)

    def get(self, model: StoredModel) -> LoadedIndex:
        """The model's index, checked against the registry at most once per ttl_s."""
        slot = self._slots.get(model.id)
        if slot is not None and time.monotonic() - self._checked.get(model.id, 0.0) < self.ttl_s:
            return slot
        with self._guard:
            lock = self._locks.setdefault(model.id, threading.Lock())
        if slot is not None:
            if not lock.acquire(blocking=False):
                return slot  # another request is checking or loading: keep serving this one
        else:
            lock.acquire()
        try:
            return self._refresh(model)
        finally:
            lock.release()

    def _refresh(self, model: StoredModel) -> LoadedIndex:
        slot = self._slots.get(model.id)
        if slot is not None and time.monotonic() - self._checked.get(model.id, 0.0) < self.ttl_s:
            return slot  # refreshed by the request this one waited for
        record = find_index(self.db, model.id, "faiss")
        if record is None or record.state != "ready" or not record.path:
            self._slots.pop(model.id, None)
            self._checked.pop(model.id, None)
            state = "missing" if record is None else record.state
            error = NoIndexError if record is None else AnnIndexError
            raise error(f"there is no ready faiss index for {model.name} ({state}): run `sisyphus index build`")
        newer = self._newer(model, record.watermark)
        if slot is not None and slot.record.sha256 == record.sha256 and slot.record.path == record.path:
            fresh = LoadedIndex(record, slot.index, slot.store, newer, slot.loaded_at)
        else:
            try:
                started = time.perf_counter()
                index, store = load_verified(record)
            except AnnIndexError as exc:
                if slot is None:
                    raise
                # The registry and the file disagree for a moment during `index update`:
                # keep serving the index in memory, and look again after ttl_s.
                logger.warning("keeping the loaded %s index: %s", model.name, exc)
                self._checked[model.id] = time.monotonic()
                return slot
            logger.info("loaded the faiss index of %s (%d vectors, sha256 %s) in %.2f s", model.name,
                        index.ntotal, str(record.sha256)[:12], time.perf_counter() - started)
            fresh = LoadedIndex(record, index, store, newer, time.time())
        self._slots[model.id] = fresh  # one reference assignment: searches in flight keep the old object
        self._checked[model.id] = time.monotonic()
        return fresh

    def _newer(self, model: StoredModel, watermark: int) -> int:
        with self.db.transaction() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM (SELECT 1 FROM embeddings WHERE model_id = :m AND frame_id > :w LIMIT :cap) n"),
                {"m": model.id, "w": watermark, "cap": NEWER_COUNT_CAP + 1}).scalar_one())
