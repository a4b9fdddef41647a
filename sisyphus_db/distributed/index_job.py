"""`sisyphus index build --ray [--shards N]`: a faiss index built in shards on Ray, merged into one.

The driver trains once, on the same seeded sample of the model's vectors a local build
trains on (on the GPU when there is one: ann.build / ann.device), and puts the trained,
empty index in the object store (faiss.serialize_index bytes). Each shard task reads one
frame-id range of the vectors from PostgreSQL by URL (store.vectors), adds them under
their frame ids and returns the serialized shard with its ids and float16 vectors. The
driver merges the shards in id order (IndexIVF / IndexIDMap2 merge_from), which gives the
very lists a local build fills, then takes the local build's own tail (tune, atomic write,
refine store, registry row with checksum and watermark: search.indexing.finish_faiss_build).
Nothing is written before every shard is back, so a failed run leaves the registry as it was.
One merged index is registered; N shards registered side by side are not offered.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.db.database import Database
from sisyphus_db.distributed.cluster import DistributedError, ray_cluster, worker_database_url
from sisyphus_db.errors import AnnIndexError, InputError
from sisyphus_db.search.indexing import DEFAULT_TARGET_RECALL, BuildReport, Progress, finish_faiss_build
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import frame_ids_of_model, vectors_by_id

logger = logging.getLogger(__name__)

# Fault injection for the tests: a shard task whose range starts above this id fails.
FAIL_SHARD_ENV = "SISYPHUS_RAY_FAIL_SHARD"


@dataclass
class ShardedBuildReport:
    build: BuildReport
    shards: int
    node_ids: list[str] = field(default_factory=list)  # the Ray node each shard ran on
    train_seconds: float = 0.0
    shard_seconds: float = 0.0
    merge_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"shards": self.shards, "nodes": len(set(self.node_ids)), "train_seconds": round(self.train_seconds, 3),
                "shard_seconds": round(self.shard_seconds, 3), "merge_seconds": round(self.merge_seconds, 3)}


def shard_ranges(ids: npt.NDArray[np.int64], shards: int) -> list[tuple[int, int]]:
    """(above, up_to] frame-id ranges holding about the same number of the (ascending) ids."""
    if shards < 1:
        raise InputError(f"--shards must be at least 1, got {shards}")
    parts = [part for part in np.array_split(ids, min(shards, max(1, ids.size))) if part.size]
    ranges: list[tuple[int, int]] = []
    above = int(ids[0]) - 1
    for part in parts:
        ranges.append((above, int(part[-1])))
        above = int(part[-1])
    return ranges


def train_empty_index(db: Database, model: StoredModel, ids: npt.NDArray[np.int64], *, factory: str,
                      train_size: int | None, device: str) -> Any:
    """The trained, empty index: trained on the sample a local build of these ids would use."""
    from sisyphus_db.ann.build import build_index, default_train_size
    from sisyphus_db.ann.factory import validate_factory

    spec = validate_factory(factory, int(ids.size), model.dim)
    size = min(int(ids.size), train_size or default_train_size(int(ids.size), spec.nlist, spec.pq_m is not None))
    if size == 0:
        rows = np.arange(1)  # nothing to train (Flat): one vector only to create the index
    elif size < ids.size:
        # ann.build.build_index's sample: the same seed and draw over the same ascending ids.
        rows = np.sort(np.random.default_rng(0).choice(ids.size, size=size, replace=False))
    else:
        rows = np.arange(ids.size)
    sample_ids, sample = vectors_by_id(db, model.id, model.dim, ids[rows])
    if sample_ids.size == 0:
        raise AnnIndexError(f"the vectors of model {model.name} changed during the build: run it again")
    # build_index trains (GPU when asked) and adds the sample; reset() empties the lists and
    # keeps the trained quantizer and codebooks.
    index = build_index(sample, sample_ids, factory=factory, train_size=max(1, int(sample_ids.size)), device=device)
    index.reset()
    return index


def run_ray_index_build(db: Database, model: StoredModel, *, address: str | None = None, shards: int | None = None,
                        factory: str = "auto", train_size: int | None = None, device: str = "auto",
                        target_recall: float = DEFAULT_TARGET_RECALL, progress: Progress | None = None,
                        worker_url: str | None = None) -> ShardedBuildReport:
    """Train on the driver, add the shards on Ray, merge, then register exactly like `index build`
    (holding the same sidecar lock: one writer of the model's index at a time)."""
    from sisyphus_db.search.sidecar_lock import sidecar_writer

    with sidecar_writer(db, model, "frames"):
        return _ray_index_build(db, model, address=address, shards=shards, factory=factory, train_size=train_size,
                                device=device, target_recall=target_recall, progress=progress,
                                worker_url=worker_url)


def _ray_index_build(db: Database, model: StoredModel, *, address: str | None, shards: int | None, factory: str,
                     train_size: int | None, device: str, target_recall: float, progress: Progress | None,
                     worker_url: str | None) -> ShardedBuildReport:
    import faiss

    from sisyphus_db.ann.device import resolve_faiss_device
    from sisyphus_db.ann.factory import choose_factory

    if not 0.0 < target_recall <= 1.0:
        raise InputError(f"--target-recall must be in (0, 1], got {target_recall}")
    url = worker_url or worker_database_url(db.settings, db.url)
    where = resolve_faiss_device(device)
    started = time.perf_counter()
    ids = frame_ids_of_model(db, model.id)
    if ids.size == 0:
        raise AnnIndexError(f"model {model.name} has no vectors: run `sisyphus ingest` first")
    if factory == "auto":
        factory = choose_factory(int(ids.size), model.dim, gpu=where == "cuda")
    with ray_cluster(address) as cluster:
        count = shards or max(1, int(cluster.cpus))
        ranges = shard_ranges(ids, count)
        if progress is not None:
            progress("train", 0, None)
        empty = train_empty_index(db, model, ids, factory=factory, train_size=train_size, device=where)
        trained = time.perf_counter()
        parts = _add_shards(url, str(db.settings.home), model, faiss.serialize_index(empty), ranges, progress)
    added = time.perf_counter()
    index = faiss.deserialize_index(parts[0][0])
    for blob, *_ in parts[1:]:
        index.merge_from(faiss.deserialize_index(blob), 0)  # keep the shard's ids (no offset)
    all_ids = np.concatenate([part[1] for part in parts])
    vectors = np.concatenate([part[2] for part in parts]).astype(np.float32)
    if int(index.ntotal) != all_ids.size or (all_ids.size > 1 and (np.diff(all_ids) <= 0).any()):
        raise AnnIndexError(f"the merged shards hold {index.ntotal} vectors for {all_ids.size} ids: run it again")
    merged = time.perf_counter()
    logger.info("ray index: trained in %.1f s, %d shards added in %.1f s, merged in %.1f s",
                trained - started, len(parts), added - trained, merged - added)
    build = finish_faiss_build(db, model, index, all_ids, vectors, factory=factory, kind="frames", device=where,
                               target_recall=target_recall, train_size=train_size, started=started, progress=progress)
    return ShardedBuildReport(build, len(parts), [part[3] for part in parts], trained - started,
                              added - trained, merged - added)


def _add_shards(url: str, home: str, model: StoredModel, empty: npt.NDArray[np.uint8], ranges: list[tuple[int, int]],
                progress: Progress | None) -> list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64],
                                                         npt.NDArray[np.float16], str]]:
    import ray

    # SPREAD: shards go to different nodes when there are several (memory and disk reads spread too).
    task = ray.remote(num_cpus=1, max_retries=1, scheduling_strategy="SPREAD")(add_shard)
    empty_ref = ray.put(empty)  # one copy in the object store, read by every shard task
    fail_above = os.environ.get(FAIL_SHARD_ENV)
    refs = [task.remote(url, home, model.id, model.dim, above, up_to, empty_ref,
                        int(fail_above) if fail_above else None) for above, up_to in ranges]
    try:
        out = []
        for ref in refs:
            out.append(ray.get(ref))
            if progress is not None:
                progress("add shards", 1, len(refs))
        return out
    except ray.exceptions.RayError as exc:
        # The other shards are left to finish and their results dropped. Not ray.cancel(force=True):
        # a task force-cancelled while completing aborts the driver in Ray 2.x ("Tried to complete
        # task that was not pending"), which once ended a whole test run.
        cause = str(getattr(exc, "cause", None) or exc).strip().splitlines()
        raise DistributedError(f"a shard task failed, nothing was registered: {cause[-1] if cause else exc}") from None


def add_shard(url: str, home: str, model_id: int, dim: int, above: int, up_to: int, empty: npt.NDArray[np.uint8],
              fail_above: int | None = None) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64],
                                                      npt.NDArray[np.float16], str]:
    """A shard task: this id range's vectors from PostgreSQL, added to a copy of the trained index."""
    import faiss
    import ray

    from sisyphus_db.config import Settings
    from sisyphus_db.db.database import open_database
    from sisyphus_db.store.vectors import model_vectors

    if fail_above is not None and above >= fail_above:
        raise AnnIndexError(f"injected failure of the shard above frame {above}")
    db = open_database(Settings(home=Path(home), database_url=url))
    try:
        ids, vectors = model_vectors(db, model_id, dim, above_id=above, up_to_id=up_to)
    finally:
        db.dispose()
    index = faiss.deserialize_index(empty)
    if ids.size:
        index.add_with_ids(vectors, ids)
    return (faiss.serialize_index(index), ids, vectors.astype(np.float16),
            ray.get_runtime_context().get_node_id())
