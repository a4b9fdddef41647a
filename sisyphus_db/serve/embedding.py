"""Query images of concurrent requests embedded together.

One thread runs the forward passes. While a pass runs, the images of newer requests queue
up, and the next pass takes all of them (up to `max_batch`) as one batch: on a CPU a batch
of 8 costs far less than 8 single passes, and one pass at a time keeps every core for it.
A lone request waits for nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16


@dataclass
class _Job:
    embedder: Any
    image: npt.NDArray[np.uint8]
    done: threading.Event = field(default_factory=threading.Event)
    vector: npt.NDArray[np.float32] | None = None
    error: BaseException | None = None


class EmbedBatcher:
    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sisyphus-embed", daemon=True)
        self._thread.start()
        self.batches: list[int] = []  # sizes of the last passes (for tests and logs)

    def embed(self, embedder: Any, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """The image's vector, computed in the next forward pass of its model."""
        job = _Job(embedder, image)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.vector is not None
        return job.vector

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                jobs.append(more)
            for embedder in {id(job.embedder): job.embedder for job in jobs}.values():
                self._pass(embedder, [job for job in jobs if job.embedder is embedder])

    def _pass(self, embedder: Any, jobs: Sequence[_Job]) -> None:
        try:
            vectors = embedder.embed_images([job.image for job in jobs])
            for job, vector in zip(jobs, vectors, strict=True):
                job.vector = np.asarray(vector, dtype=np.float32)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            for job in jobs:
                job.error = exc
        finally:
            self.batches = [*self.batches[-99:], len(jobs)]
            for job in jobs:
                job.done.set()


class BatchedEmbedder:
    """An embedder whose `embed_images` goes through the batcher (what query_from_rgb calls)."""

    def __init__(self, embedder: Any, batcher: EmbedBatcher) -> None:
        self.embedder = embedder
        self.spec = embedder.spec
        self.batcher = batcher

    def embed_images(self, images: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        return np.stack([self.batcher.embed(self.embedder, image) for image in images])
