"""The ingest runner: reader (decoding workers) -> mapper (model) -> writer (COPY).

Decoding and JPEG encoding run in worker processes, the model runs here, and a writer
thread writes frame files and COPYs rows, so the three overlap. Every batch is one
transaction (frames and vectors together); a source is marked complete only after its
last batch, so a run stopped by Ctrl-C or kill -9 resumes where it stopped when run
again, with no duplicate and no missing frame.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sisyphus_db.db.database import Database
from sisyphus_db.embed.embedder import Embedder, load_embedder
from sisyphus_db.embed.models import DEFAULT_MODEL
from sisyphus_db.ingest.messages import (
    Candidate,
    Candidates,
    ImageTask,
    InputFailed,
    KeyframeOptions,
    SourceInfo,
    TaskDone,
    VideoTask,
)
from sisyphus_db.ingest.worker import run_worker
from sisyphus_db.media.discover import discover
from sisyphus_db.media.images import frame_jpeg_path, write_atomic
from sisyphus_db.media.keyframes import make_selector
from sisyphus_db.media.video import VideoFrame
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.stats import refresh_planner_statistics
from sisyphus_db.store.registry import (
    StoredModel,
    finish_source,
    mark_source_complete,
    record_ingest_error,
    register_model,
    source_is_done,
    stored_frame_keys,
    update_source_details,
    upsert_source,
)

logger = logging.getLogger(__name__)

IMAGES_PER_TASK = 64
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class IngestOptions:
    model: str = DEFAULT_MODEL
    device: str = "auto"
    keyframes: KeyframeOptions = KeyframeOptions()
    tags: dict[str, str] = field(default_factory=dict)
    batch_size: int = 32
    workers: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class IngestSummary:
    model: str
    sources: int = 0
    frames: int = 0
    skipped: int = 0
    errors: int = 0
    ignored: int = 0
    seconds: float = 0.0
    error_details: list[dict[str, str]] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "sources": self.sources,
            "frames": self.frames,
            "skipped": self.skipped,
            "errors": self.errors,
            "ignored": self.ignored,
            "seconds": round(self.seconds, 3),
            "frames_per_second": round(self.frames_per_second, 2),
            "error_details": self.error_details,
        }


class IngestObserver(Protocol):
    """Progress hooks for the CLI runner (the library draws no progress bars)."""

    def sources_planned(self, total: int) -> None: ...
    def source_finished(self) -> None: ...
    def frames_stored(self, count: int) -> None: ...


class _Silent:
    def sources_planned(self, total: int) -> None: ...
    def source_finished(self) -> None: ...
    def frames_stored(self, count: int) -> None: ...


def default_workers() -> int:
    # One core stays with the model; the rest decode.
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def run_ingest(
    db: Database,
    paths: Sequence[Path | str],
    options: IngestOptions = IngestOptions(),
    observer: IngestObserver | None = None,
    embedder: Embedder | None = None,
) -> IngestSummary:
    """Ingest images, folders and videos; returns what was stored, skipped and failed."""
    started = time.perf_counter()
    observer = observer or _Silent()
    # Validate the key-frame options before any work is done.
    make_selector(options.keyframes.method, fps=options.keyframes.fps, threshold=options.keyframes.threshold,
                  max_gap_seconds=options.keyframes.max_gap_seconds)
    decoders = _Decoders(options.workers or default_workers())
    try:
        embedder = embedder or load_embedder(options.model, device=options.device)
        spec = embedder.spec
        summary = IngestSummary(model=spec.name)
        model = register_model(db, name=spec.name, dim=spec.dim, weights_sha256=spec.weights_sha256,
                               pooling=spec.pooling, preprocessing=spec.preprocessing)

        found = discover(paths)
        summary.ignored = found.ignored
        for failure in found.errors:
            record_failure(db, summary, InputFailed(0, str(failure.path), failure.reason, "discover"))

        tasks = plan_tasks(db, found, options, model, spec.preprocessing, summary)
        sources = Counter(task.source_id for task in tasks)
        summary.sources = len(sources)
        observer.sources_planned(len(sources))
        if tasks:
            _run(db, decoders, tasks, sources, options, embedder, model, summary, observer)
    finally:
        decoders.close()
    if summary.frames:
        refresh_planner_statistics(db)
    summary.seconds = time.perf_counter() - started
    return summary


def plan_tasks(db: Database, found: Any, options: IngestOptions, model: StoredModel, preprocessing: dict[str, Any],
          summary: IngestSummary) -> list[VideoTask | ImageTask]:
    tasks: list[VideoTask | ImageTask] = []
    method = options.keyframes.method
    for video in found.videos:
        source = upsert_source(db, uri=str(video), kind="video", tags=options.tags, keyframe_method=method)
        if source_is_done(db, source.id, model.id):
            summary.skipped += 1
            continue
        # The similarity rule must see every earlier frame again, so it skips nothing.
        stored = set() if method == "similarity" else {index for index, _ in stored_frame_keys(db, source.id, model.id)}
        tasks.append(VideoTask(source.id, str(video), options.keyframes, preprocessing, frozenset(stored)))
    for group in found.image_groups:
        source = upsert_source(db, uri=str(group.root), kind=group.kind, tags=options.tags, keyframe_method="image")
        stored_paths = {path for _, path in stored_frame_keys(db, source.id, model.id)}
        todo = [str(path) for path in group.images if str(path) not in stored_paths]
        summary.skipped += len(group.images) - len(todo)
        if not todo:
            mark_source_complete(db, source.id)
            continue
        for start in range(0, len(todo), IMAGES_PER_TASK):
            chunk = tuple(todo[start:start + IMAGES_PER_TASK])
            tasks.append(ImageTask(source.id, str(group.root), chunk, preprocessing, options.max_pixels))
    return tasks


def record_failure(db: Database, summary: IngestSummary, failure: InputFailed) -> None:
    # Library messages name the file first; the uri has its own column.
    reason = failure.reason.removeprefix(f"{failure.uri}: ")
    summary.errors += 1
    summary.error_details.append({"uri": failure.uri, "reason": reason})
    record_ingest_error(db, uri=failure.uri, stage=failure.stage, reason=reason, source_id=failure.source_id or None)
    logger.info("skipped %s: %s", failure.uri, reason)


class _Decoders:
    """The decoding worker processes.

    Started first, so their interpreter start-up overlaps loading the model and planning
    the run instead of adding to it.
    """

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.count = count
        self.tasks: Any = context.Queue()
        self.results: Any = context.Queue(maxsize=8 * count)
        self.processes = [
            context.Process(target=run_worker, args=(self.tasks, self.results, os.getpid()), daemon=True,
                            name=f"decoder-{i}")
            for i in range(count)
        ]
        for process in self.processes:
            process.start()

    def submit(self, tasks: list[VideoTask | ImageTask]) -> None:
        for task in tasks:
            self.tasks.put(task)
        for _ in self.processes:
            self.tasks.put(None)

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout=5)


def _run(db: Database, decoders: _Decoders, tasks: list[VideoTask | ImageTask], open_tasks: Counter[int],
         options: IngestOptions, embedder: Embedder, model: StoredModel, summary: IngestSummary,
         observer: IngestObserver) -> None:
    decoders.submit(tasks)
    writer = _Writer(db, model, summary, observer)
    mapper = _Mapper(embedder, options.keyframes, options.batch_size, writer.submit)
    try:
        _consume(decoders.results, decoders.processes, tasks, open_tasks, mapper, writer)
        writer.close()
    finally:
        writer.stop()


def _consume(results: Any, processes: list[Any], tasks: list[VideoTask | ImageTask], open_tasks: Counter[int],
             mapper: _Mapper, writer: _Writer) -> None:
    """Route worker messages until every task is done: candidates to the model, the rest to the writer."""
    while open_tasks:
        try:
            message = results.get(timeout=2.0)
        except queue.Empty:
            writer.raise_if_failed()
            if not any(process.is_alive() for process in processes):
                uris = {task.source_id: _task_uri(task) for task in tasks}
                codes = sorted({str(process.exitcode) for process in processes})
                for source_id in list(open_tasks):
                    writer.submit(("failed", InputFailed(
                        source_id, uris[source_id], f"the decoding worker died (exit code {', '.join(codes)})",
                        "decode")))
                break
            continue
        if isinstance(message, Candidates):
            mapper.add(message.items)
        elif isinstance(message, SourceInfo):
            writer.submit(("info", message))
        elif isinstance(message, InputFailed):
            writer.submit(("failed", message))
        elif isinstance(message, TaskDone):
            open_tasks[message.source_id] -= 1
            if message.failed is not None:
                writer.submit(("failed", message.failed))
            if open_tasks[message.source_id] == 0:
                del open_tasks[message.source_id]
                mapper.flush()
                writer.submit(("complete", message.source_id))
        writer.raise_if_failed()
    mapper.flush()


def _task_uri(task: VideoTask | ImageTask) -> str:
    return task.path if isinstance(task, VideoTask) else task.source_uri


class _Mapper:
    """Batches candidates, embeds them and applies the similarity rule where asked."""

    def __init__(self, embedder: Embedder, keyframes: KeyframeOptions, batch_size: int,
                 emit: Callable[[tuple[str, Any]], None]) -> None:
        self.embedder = embedder
        self.keyframes = keyframes
        self.batch_size = batch_size
        self.emit = emit
        self.pending: list[Candidate] = []
        self.selectors: dict[int, Any] = {}

    def add(self, items: Iterable[Candidate]) -> None:
        self.pending.extend(items)
        while len(self.pending) >= self.batch_size:
            batch, self.pending = self.pending[:self.batch_size], self.pending[self.batch_size:]
            self._embed(batch)

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:self.batch_size], self.pending[self.batch_size:]
            self._embed(batch)

    def _embed(self, batch: list[Candidate]) -> None:
        vectors = self.embedder.embed_prepared(np.stack([item.prepared for item in batch]))
        keep = [self._keep(item, vector) for item, vector in zip(batch, vectors, strict=True)]
        kept = [item for item, flag in zip(batch, keep, strict=True) if flag]
        if kept:
            self.emit(("frames", (kept, vectors[np.asarray(keep)])))

    def _keep(self, item: Candidate, vector: np.ndarray) -> bool:
        if item.keyframe_method != "similarity":
            return True
        selector = self.selectors.get(item.source_id)
        if selector is None:
            selector = make_selector("similarity", threshold=self.keyframes.threshold)
            self.selectors[item.source_id] = selector
        frame = VideoFrame(item.frame_index, item.pts_seconds, item.prepared, False)
        decision = selector.offer(frame, vector)
        if decision is None:
            return False
        item.keyframe_score = decision.score
        return True


class _Writer:
    """A thread that owns every database write during the run, in arrival order."""

    def __init__(self, db: Database, model: StoredModel, summary: IngestSummary, observer: IngestObserver) -> None:
        self.db = db
        self.model = model
        self.summary = summary
        self.observer = observer
        self.frames_dir = db.settings.frames_dir
        self.queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.failed_sources: set[int] = set()
        self.thread = threading.Thread(target=self._loop, name="ingest-writer", daemon=True)
        self.thread.start()

    def submit(self, item: tuple[str, Any]) -> None:
        while True:
            self.raise_if_failed()
            try:
                self.queue.put(item, timeout=1.0)
                return
            except queue.Full:
                continue

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.raise_if_failed()

    def stop(self) -> None:
        # After an interrupt: let the batch in flight commit or roll back, then return.
        # The event (not a None in the queue, which may be full) is what ends the loop:
        # queued batches are dropped; the next run redoes them.
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                return
            try:
                self._handle(*item)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.error = exc
                return

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "frames":
            items, vectors = payload
            self._store(items, vectors)
        elif kind == "info":
            update_source_details(self.db, payload.source_id, **payload.details)
        elif kind == "failed":
            self.failed_sources.add(payload.source_id)
            record_failure(self.db, self.summary, payload)
        elif kind == "complete":
            finish_source(self.db, payload, failed=payload in self.failed_sources)
            self.observer.source_finished()

    def _store(self, items: list[Candidate], vectors: np.ndarray) -> None:
        result = load_frames(self.db, self.model.id, frame_rows(items, self.frames_dir), vectors)
        self.summary.frames += result.frames_added
        self.observer.frames_stored(result.frames_added)


def frame_rows(items: list[Candidate], frames_dir: Path) -> list[FrameRow]:
    """The frames rows of kept candidates; video frames' JPEGs are written under frames_dir first."""
    rows = []
    for item in items:
        path = item.path
        if item.jpeg is not None:
            target = frame_jpeg_path(frames_dir, item.source_id, item.frame_index)
            write_atomic(target, item.jpeg)
            path = str(target)
        assert path is not None and item.sha256 is not None
        rows.append(FrameRow(
            source_id=item.source_id, frame_index=item.frame_index, pts_seconds=item.pts_seconds, path=path,
            width=item.width, height=item.height, sha256=item.sha256, keyframe_method=item.keyframe_method,
            keyframe_score=item.keyframe_score, captured_at=item.captured_at, metadata=item.metadata,
        ))
    return rows
