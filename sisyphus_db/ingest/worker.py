"""Decoding workers: decode, select key frames, encode JPEGs and prepare model inputs.

They run in separate processes so decoding overlaps the model's forward passes; only
small prepared arrays and JPEG bytes cross the process boundary.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import queue
import signal
from multiprocessing.queues import Queue
from typing import Any

import numpy as np
from PIL import Image

from sisyphus_db.media.activation_manifest import activation_metadata
from sisyphus_db.embed.preprocess import prepare_image
from sisyphus_db.errors import SisyphusError
from sisyphus_db.ingest.messages import (
    Candidate,
    Candidates,
    ImageTask,
    InputFailed,
    SourceInfo,
    TaskDone,
    VideoTask,
)
from sisyphus_db.media.images import load_image
from sisyphus_db.media.keyframes import make_selector
from sisyphus_db.media.video import iter_video_frames, probe_video

logger = logging.getLogger(__name__)

CHUNK = 16  # candidates per message: small enough to keep the model fed early
JPEG_QUALITY = 90
DECODER_NICENESS = 10


def run_worker(tasks: Queue[Any], results: Queue[Any], parent_pid: int) -> None:
    """Worker loop: take tasks until a None arrives or the parent is gone."""
    # Ctrl-C in a terminal reaches the whole process group. The runner owns the shutdown
    # (it terminates its workers); a KeyboardInterrupt here would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Decoding is cheap next to the model: at a lower priority it fills the model's idle
    # moments instead of stalling the model's threads, which wait on each other per layer.
    os.nice(DECODER_NICENESS)
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:
                _abandon(results)
                return  # the runner was killed; do not linger
            continue
        if task is None:
            return
        try:
            if isinstance(task, VideoTask):
                _run_video(task, results, parent_pid)
            else:
                _run_images(task, results, parent_pid)
        except _ParentGone:
            _abandon(results)
            return


def _abandon(results: Queue[Any]) -> None:
    """Exit without flushing the result queue: nobody will ever read it.

    At exit multiprocessing joins the queue's feeder thread, which waits until its
    buffer is written to the pipe; with the runner dead the pipe stays full (this
    process holds its read end too, so writes never fail) and the worker would hang
    forever as an orphan, holding the decoded video open.
    """
    results.cancel_join_thread()


class _ParentGone(Exception):
    pass


def _put(results: Queue[Any], message: object, parent_pid: int) -> None:
    # A bounded queue gives back-pressure; the timeout lets an orphan notice and quit.
    while True:
        try:
            results.put(message, timeout=1.0)
            return
        except queue.Full:
            if os.getppid() != parent_pid:
                raise _ParentGone from None


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _run_video(task: VideoTask, results: Queue[Any], parent_pid: int) -> None:
    try:
        info = probe_video(task.path)
    except SisyphusError as exc:
        _put(results, TaskDone(task.source_id, InputFailed(task.source_id, task.path, str(exc), "decode")), parent_pid)
        return
    _put(results, SourceInfo(task.source_id, {
        "duration_seconds": info.duration_seconds, "fps": info.fps, "width": info.width, "height": info.height,
        "codec": info.codec, "fingerprint": info.fingerprint,
    }), parent_pid)
    options = task.keyframes
    selector = make_selector(options.method, fps=options.fps, threshold=options.threshold, video_fps=info.fps,
                             max_gap_seconds=options.max_gap_seconds)
    # The similarity rule needs embeddings: every frame (or every 1/fps step) is a
    # candidate, and the runner decides after embedding.
    defer = selector.needs_embedding
    chunk: list[Candidate] = []
    failure: InputFailed | None = None
    try:
        frames = iter_video_frames(
            task.path,
            keyframes_only=options.method == "iframe",
            fps=options.fps if defer else None,
        )
        for frame in frames:
            if defer:
                decision_method, score = options.method, None
            else:
                decision = selector.offer(frame)
                if decision is None:
                    continue
                decision_method, score = decision.method, decision.score
            if frame.index in task.stored_indexes:
                continue
            height, width = frame.rgb.shape[:2]
            jpeg = _jpeg(frame.rgb)
            chunk.append(Candidate(
                source_id=task.source_id, frame_index=frame.index, pts_seconds=max(0.0, frame.pts_seconds),
                width=width, height=height, prepared=prepare_image(frame.rgb, task.preprocessing),
                keyframe_method=decision_method, keyframe_score=score, jpeg=jpeg,
                sha256=hashlib.sha256(jpeg).hexdigest(),
            ))
            if len(chunk) >= CHUNK:
                _put(results, Candidates(task.source_id, chunk), parent_pid)
                chunk = []
    except SisyphusError as exc:
        failure = InputFailed(task.source_id, task.path, str(exc), "decode")
    if chunk:
        _put(results, Candidates(task.source_id, chunk), parent_pid)
    _put(results, TaskDone(task.source_id, failure), parent_pid)


def _run_images(task: ImageTask, results: Queue[Any], parent_pid: int) -> None:
    chunk: list[Candidate] = []
    for path in task.paths:
        try:
            image = load_image(path, max_pixels=task.max_pixels)
        except SisyphusError as exc:
            _put(results, InputFailed(task.source_id, path, str(exc), "decode"), parent_pid)
            continue
        chunk.append(Candidate(
            source_id=task.source_id, frame_index=0, pts_seconds=0.0, width=image.width, height=image.height,
            prepared=prepare_image(image.rgb, task.preprocessing), keyframe_method="image", keyframe_score=None,
            path=path, sha256=image.sha256, captured_at=image.captured_at,
            # An activated image carries its provenance (original, PSNR, index) in a manifest beside it.
            metadata=activation_metadata(path),
        ))
        if len(chunk) >= CHUNK:
            _put(results, Candidates(task.source_id, chunk), parent_pid)
            chunk = []
    if chunk:
        _put(results, Candidates(task.source_id, chunk), parent_pid)
    _put(results, TaskDone(task.source_id), parent_pid)


class _Collected:
    """A stand-in for the result queue that keeps every message, for one task run in-process."""

    def __init__(self) -> None:
        self.messages: list[object] = []

    def put(self, message: object, timeout: float | None = None) -> None:
        self.messages.append(message)


def decode_task(task: VideoTask | ImageTask) -> list[object]:
    """Run one decoding task here and return its messages in order (Ray's decoding tasks use this)."""
    collected = _Collected()
    # No parent to watch: the collector never fills up, so the orphan check never runs.
    if isinstance(task, VideoTask):
        _run_video(task, collected, os.getppid())  # type: ignore[arg-type]
    else:
        _run_images(task, collected, os.getppid())  # type: ignore[arg-type]
    return collected.messages
