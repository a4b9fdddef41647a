"""Building, updating, verifying and dropping the indexes derived from the embeddings table.

The faiss sidecar is a file under SISYPHUS_HOME/indexes whose ids are frame ids; its
registry row in `ann_indexes` says which model, which frames (the watermark: the
highest frame id it holds) and which file (sha256). The pgvector alternative, an HNSW
expression index on the model's partition, is built in `pgvector_index`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sisyphus_db.ann.refine import RefineFiles, open_refine
from sisyphus_db.db.database import Database, file_slug
from sisyphus_db.errors import AnnIndexError, InputError
from sisyphus_db.search.refine_sidecar import (
    drop_refine,
    refine_files,
    refine_from_table,
    updated_refine,
    write_new_refine,
)
from sisyphus_db.search.sidecar_files import drop_leftovers, new_index_file
from sisyphus_db.search.sidecar_lock import sidecar_writer
from sisyphus_db.store.indexes import (
    IndexRecord,
    delete_index,
    find_index,
    list_indexes,
    save_index,
    update_index,
)
from sisyphus_db.store.registry import StoredModel, find_model, stored_models
from sisyphus_db.store.vectors import (
    FRAMES,
    frame_ids_of_model,
    model_vectors,
    vector_table,
)

logger = logging.getLogger(__name__)

METRIC = "cosine"
DEFAULT_TARGET_RECALL = 0.95
IN_MEMORY_RERANK_WEIGHT = 16.0
# Re-ranking from memory is cheap enough to go deeper than PostgreSQL fetches could: at 10M
# short PQ codes (16 bytes) rank the true neighbours of dense clusters beyond the 1,000th.
IN_MEMORY_RERANK_DEPTHS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

Progress = Callable[[str, int, int | None], None]  # (stage, advance, total)


def resolve_model(db: Database, name: str | None) -> StoredModel:
    """The stored model to work with: the one named, or the only one there is."""
    if name is not None:
        from sisyphus_db.embed.models import get_model_spec

        model = find_model(db, name)
        if model is None:
            # Accept spellings with the default pooling suffix (resnet50@max is resnet50).
            try:
                model = find_model(db, get_model_spec(name).name)
            except Exception:  # noqa: BLE001 - an unknown name is reported below
                model = None
        if model is None:
            known = ", ".join(m.name for m in stored_models(db)) or "none yet: run `sisyphus ingest` first"
            raise InputError(f"no vectors for model {name!r} in the database (models: {known})")
        return model
    models = stored_models(db)
    if not models:
        raise InputError("the database holds no vectors yet: run `sisyphus ingest` first")
    if len(models) > 1:
        raise InputError(f"several models are stored ({', '.join(m.name for m in models)}): choose one with --model")
    return models[0]


def index_path(db: Database, model: StoredModel, kind: str = FRAMES.kind) -> Path:
    suffix = "" if kind == FRAMES.kind else f"-{kind}"
    return db.index_dir / f"{file_slug(model.name)}-{model.id}{suffix}.faiss"


def build_command(kind: str = FRAMES.kind, verb: str = "build") -> str:
    """The command that builds (or updates) an index of this kind, for error messages."""
    return f"sisyphus index {verb}" + ("" if kind == FRAMES.kind else f" --kind {kind}")


@dataclass
class BuildReport:
    record: IndexRecord
    vectors: int
    seconds: float
    tune_table: list[dict[str, Any]] = field(default_factory=list)
    reached: bool = True


def build_faiss_index(
    db: Database,
    model: StoredModel,
    *,
    factory: str = "auto",
    train_size: int | None = None,
    device: str = "auto",
    target_recall: float = DEFAULT_TARGET_RECALL,
    memory_budget_bytes: int | None = None,
    progress: Progress | None = None,
    kind: str = FRAMES.kind,
) -> BuildReport:
    """Train, add every vector under its id (frame id, region id, ...), tune nprobe and rerank depth,
    write, register under (model, faiss, kind). One writer of the sidecar at a time (`sidecar_lock`)."""
    if not 0.0 < target_recall <= 1.0:
        raise InputError(f"--target-recall must be in (0, 1], got {target_recall}")
    with sidecar_writer(db, model, kind):
        return _build_faiss_index(db, model, factory=factory, train_size=train_size, device=device,
                                  target_recall=target_recall, memory_budget_bytes=memory_budget_bytes,
                                  progress=progress, kind=kind)


def _build_faiss_index(db: Database, model: StoredModel, *, factory: str, train_size: int | None, device: str,
                       target_recall: float, memory_budget_bytes: int | None, progress: Progress | None,
                       kind: str) -> BuildReport:
    from sisyphus_db.ann.build import build_index
    from sisyphus_db.ann.device import resolve_faiss_device
    from sisyphus_db.ann.factory import choose_factory

    table = vector_table(kind)
    where = resolve_faiss_device(device)
    started = time.perf_counter()
    path = index_path(db, model, kind)
    refine = refine_from_table(db, model, path, table=table, progress=_stage(progress, "read vectors"))
    try:
        store = open_refine(refine)
        if store.ntotal == 0:
            if table is not FRAMES:
                raise AnnIndexError(f"model {model.name} has no {table.kind} vectors: run `sisyphus {table.kind} build` "
                                    "first")
            raise AnnIndexError(f"model {model.name} has no vectors: run `sisyphus ingest` first")
        if factory == "auto":
            budget = {} if memory_budget_bytes is None else {"memory_budget_bytes": memory_budget_bytes}
            factory = choose_factory(store.ntotal, model.dim, gpu=where == "cuda", **budget)
        logger.info("building %s over %d %d-d vectors on %s", factory, store.ntotal, model.dim, where)
        # trained, filled and tuned from the mapped float16 store: no float32 copy of every vector
        index = build_index(store.vectors, store.ids, factory=factory, train_size=train_size, device=where,
                            progress=_stage(progress, "add vectors", store.ntotal))
    except BaseException:
        drop_refine(refine)
        raise
    return finish_faiss_build(db, model, index, store.ids, store.vectors, factory=factory, kind=kind, device=where,
                              target_recall=target_recall, train_size=train_size, started=started,
                              progress=progress, refine=refine)


def finish_faiss_build(db: Database, model: StoredModel, index: Any, ids: np.ndarray, vectors: np.ndarray, *,
                       factory: str, kind: str, device: str, target_recall: float, train_size: int | None,
                       started: float, progress: Progress | None = None,
                       refine: RefineFiles | None = None) -> BuildReport:
    """Tune, write (atomically), write the refine store and register a filled index: the tail of
    every faiss build, local or sharded (sisyphus_db.distributed.index_job). ids ascending.
    The caller holds the sidecar lock (`sidecar_lock.sidecar_writer`).

    `refine`: the store already written from these ids and vectors (a local build streams
    the table into it first); it is deleted if the build fails before it is registered."""
    from sisyphus_db.ann.files import write_index_atomic
    from sisyphus_db.ann.tune import tune

    where = device
    path: Path | None = None
    try:
        # The rerank reads the refine store in memory (~1 us a candidate, ~16 scanned PQ codes),
        # not PostgreSQL (tune's default weight): deeper reranks with fewer probes now win.
        tuned = tune(index, vectors, ids, target_recall=target_recall, progress=_stage(progress, "tune"),
                     rerank_weight=IN_MEMORY_RERANK_WEIGHT, rerank_depths=IN_MEMORY_RERANK_DEPTHS)
        if not tuned.reached:
            logger.warning("%s reached recall@10 %.3f, below the target %.2f, at its widest setting",
                           factory, tuned.recall_at_10, target_recall)
        base = index_path(db, model, kind)
        base.parent.mkdir(parents=True, exist_ok=True)
        path = new_index_file(base)
        sha256 = write_index_atomic(index, path)
        previous = find_index(db, model.id, "faiss", kind)
        if refine is None:
            refine = write_new_refine(base, ids, vectors)  # ids come ascending from model_vectors
        seconds = time.perf_counter() - started
        record = save_index(
            db, model_id=model.id, backend="faiss", kind=kind, factory=factory, metric=METRIC, path=str(path),
            sha256=sha256, ntotal=int(index.ntotal), watermark=int(ids.max()),
            params={"nprobe": tuned.nprobe, "rerank_k": tuned.rerank_k, "target_recall": target_recall,
                    "reached": tuned.reached, "train_size": train_size, "tune_seconds": round(tuned.seconds, 3),
                    "refine": refine.to_params()},
            recall_at_10=tuned.recall_at_10, build_seconds=seconds, device=where, state="ready",
        )
    except BaseException:
        _discard_unregistered(db, model, kind, path, refine)
        raise
    if previous is not None:
        _drop_generation(previous)
    drop_leftovers(base, [path, *refine.paths()])  # the caller holds the sidecar lock
    table = [{"nprobe": row.nprobe, "rerank_k": row.rerank_k, "recall_at_10": row.recall_at_10}
             for row in tuned.table]
    return BuildReport(record, int(ids.size), seconds, table, tuned.reached)


@dataclass
class UpdateReport:
    record: IndexRecord
    added: int
    removed: int


def update_faiss_index(db: Database, model: StoredModel, *, progress: Progress | None = None,
                       kind: str = FRAMES.kind) -> UpdateReport:
    """Add the rows above the watermark and remove deleted ones, without retraining."""
    with sidecar_writer(db, model, kind):
        return _update_faiss_index(db, model, progress=progress, kind=kind)


def _update_faiss_index(db: Database, model: StoredModel, *, progress: Progress | None, kind: str) -> UpdateReport:
    from sisyphus_db.ann.build import add_vectors, index_ids, remove_ids
    from sisyphus_db.ann.files import read_index, write_index_atomic

    table = vector_table(kind)
    record = require_faiss_record(db, model, kind)
    # A private copy: the cached one may be serving searches while this one changes.
    index = read_index(str(record.path), expected_sha256=record.sha256)
    ids, vectors = model_vectors(db, model.id, model.dim, above_id=record.watermark,
                                 progress=_stage(progress, "read new vectors"), table=table)
    if ids.size:
        add_vectors(index, vectors, ids)
    before = index_ids(index)
    gone = np.setdiff1d(before, frame_ids_of_model(db, model.id, table), assume_unique=False)
    removed = remove_ids(index, gone) if gone.size else 0
    if ids.size == 0 and removed == 0 and refine_files(record) is not None:
        return UpdateReport(record, 0, 0)
    # The refine store follows the index: old rows minus the deleted frames, plus the new ones.
    # Both are a new generation: the registered files stay as they are until the row switches.
    base = index_path(db, model, kind)
    base.parent.mkdir(parents=True, exist_ok=True)
    path = new_index_file(base)
    refine = updated_refine(db, model, record, ids, vectors, gone, before, table=table)
    try:
        sha256 = write_index_atomic(index, path)
        updated = update_index(db, record.id, path=str(path), sha256=sha256, ntotal=int(index.ntotal),
                               watermark=max(record.watermark, int(ids.max()) if ids.size else 0), state="ready",
                               params={**record.params, "refine": refine.to_params()})
    except BaseException:
        _discard_unregistered(db, model, kind, path, refine)
        raise
    _drop_generation(record)
    drop_leftovers(base, [path, *refine.paths()])
    return UpdateReport(updated, int(ids.size), int(removed))


def _drop_generation(record: IndexRecord) -> None:
    """Delete the files of a generation the registry no longer names (a reader that mapped
    them finishes on them)."""
    if record.path:
        Path(record.path).unlink(missing_ok=True)
        forget_loaded(Path(record.path))
    drop_refine(refine_files(record))


def _discard_unregistered(db: Database, model: StoredModel, kind: str, path: Path | None,
                          refine: RefineFiles | None) -> None:
    """After a failed build or update: delete its new files, unless the registry names them after
    all (the failure came after the row was written) or cannot be asked (then the next
    writer removes them as leftovers)."""
    try:
        current = find_index(db, model.id, "faiss", kind)
    except Exception:  # noqa: BLE001 - the database is gone: keep the files rather than guess
        return
    if current is not None and path is not None and current.path == str(path):
        return
    if path is not None:
        path.unlink(missing_ok=True)
    drop_refine(refine)


def drop_index(db: Database, model: StoredModel, backend: str, kind: str = FRAMES.kind) -> IndexRecord:
    if backend != "faiss":
        return _drop_index(db, model, backend, kind)
    with sidecar_writer(db, model, kind):
        return _drop_index(db, model, backend, kind)


def _drop_index(db: Database, model: StoredModel, backend: str, kind: str) -> IndexRecord:
    record = find_index(db, model.id, backend, kind)
    if record is None:
        of = "" if kind == FRAMES.kind else f" of {kind}"
        raise AnnIndexError(f"there is no {backend} index{of} for {model.name}")
    if backend == "faiss":
        _drop_generation(record)
        drop_leftovers(index_path(db, model, kind), [])  # under the sidecar lock
    if backend == "pgvector":
        from sisyphus_db.search.pgvector_index import drop_hnsw

        drop_hnsw(db, model)
    delete_index(db, record.id)
    return record


def require_faiss_record(db: Database, model: StoredModel, kind: str = FRAMES.kind) -> IndexRecord:
    record = find_index(db, model.id, "faiss", kind)
    of = "" if kind == FRAMES.kind else f" of {kind}"
    if record is None:
        raise AnnIndexError(f"there is no faiss index{of} for {model.name}: run `{build_command(kind)}`")
    if record.state != "ready" or not record.path:
        raise AnnIndexError(f"the faiss index{of} for {model.name} is {record.state}: run `{build_command(kind)}`")
    return record


_loaded: dict[tuple[str, str, tuple[int, int, int] | None], Any] = {}
_loaded_lock = threading.Lock()


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of the file, None when it is missing: a cheap change detector."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def load_faiss_index(record: IndexRecord) -> Any:
    """The index file, checked against the registry checksum, cached per (path, sha256, file).

    The cache key includes the file's inode, size and mtime, so a file that was deleted,
    replaced or modified since it was loaded is read (and its checksum checked) again
    instead of being served from memory.
    """
    from sisyphus_db.ann.files import read_index

    path = Path(str(record.path))
    key = (str(path), str(record.sha256), _file_identity(path))
    with _loaded_lock:
        if key not in _loaded:
            for stale in [cached for cached in _loaded if cached[0] == str(path)]:
                del _loaded[stale]
            index = read_index(path, expected_sha256=record.sha256, mmap=True)
            if key[2] is not None:
                _loaded[key] = index
            return index
        return _loaded[key]


def forget_loaded(path: Path) -> None:
    with _loaded_lock:
        for key in [key for key in _loaded if key[0] == str(path)]:
            del _loaded[key]


def indexes_status(db: Database) -> list[IndexRecord]:
    return list_indexes(db)


def _stage(progress: Progress | None, stage: str, total: int | None = None) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda advance: progress(stage, advance, total)
