"""`sisyphus ingest --ray`: the ingest pipeline as a Ray Data job.

Discovery and planning run on the driver (the same plan as a local ingest: the same
sources, and stored frames skipped). Decoding and key-frame selection are CPU tasks, one
per video or per batch of images; embedding runs in actors that hold the model (one GPU
each on a GPU cluster); writing is done by tasks that binary-COPY each batch through the
staging table with ON CONFLICT (store.bulk), so a retried task never duplicates a row.
Sources are marked complete by the driver once every batch is in, so a run that dies
resumes like a local one.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sisyphus_db.db.database import Database
from sisyphus_db.distributed.cluster import DistributedError, ray_cluster, worker_database_url
from sisyphus_db.ingest.messages import Candidate, Candidates, ImageTask, InputFailed, SourceInfo, TaskDone, VideoTask
from sisyphus_db.ingest.pipeline import IngestObserver, IngestOptions, IngestSummary, plan_tasks, record_failure
from sisyphus_db.store.registry import finish_source, register_model, update_source_details

logger = logging.getLogger(__name__)

# Fault injection for the retry test: the first writer task to see this path missing
# creates it and dies right after its batch committed, as a killed worker would.
FAIL_ONCE_ENV = "SISYPHUS_RAY_FAIL_WRITER_ONCE"


def run_ray_ingest(db: Database, paths: Sequence[Path | str], options: IngestOptions, *,
                   address: str | None = None, observer: IngestObserver | None = None,
                   actors: int | None = None) -> IngestSummary:
    """Ingest on Ray; the same rows as `run_ingest` on the same inputs."""
    from sisyphus_db.embed.models import get_model_spec
    from sisyphus_db.media.discover import discover

    if options.keyframes.method == "similarity":
        raise DistributedError("--keyframes similarity compares each frame with the last kept one of its video "
                               "after embedding, which needs one process per video: use scene, iframe or fps "
                               "with --ray")
    url = worker_database_url(db.settings, db.url)
    started = time.perf_counter()
    spec = get_model_spec(options.model)
    summary = IngestSummary(model=spec.name)
    model = register_model(db, name=spec.name, dim=spec.dim, weights_sha256=spec.weights_sha256,
                           pooling=spec.pooling, preprocessing=spec.preprocessing)
    found = discover(paths)
    summary.ignored = found.ignored
    for failure in found.errors:
        record_failure(db, summary, InputFailed(0, str(failure.path), failure.reason, "discover"))
    tasks = plan_tasks(db, found, options, model, spec.preprocessing, summary)
    sources = sorted({task.source_id for task in tasks})
    summary.sources = len(sources)
    if observer is not None:
        observer.sources_planned(len(sources))
    if tasks:
        with ray_cluster(address) as cluster:
            logger.info("ray: %d nodes, %.0f CPUs, %.0f GPUs", cluster.nodes, cluster.cpus, cluster.gpus)
            _check_paths_visible(tasks)
            failed = _run_job(db, url, tasks, options, model.id, cluster.gpus, actors, summary, observer)
        for source_id in sources:
            finish_source(db, source_id, failed=source_id in failed)
            if observer is not None:
                observer.source_finished()
    if summary.frames:
        from sisyphus_db.store.stats import refresh_planner_statistics

        refresh_planner_statistics(db)
    summary.seconds = time.perf_counter() - started
    return summary


def _check_paths_visible(tasks: list[VideoTask | ImageTask]) -> None:
    """Every node must see the inputs at the same paths (shared storage): check one per source on a worker."""
    import ray

    probes = sorted({task.path if isinstance(task, VideoTask) else task.paths[0] for task in tasks})

    @ray.remote(num_cpus=0.1)
    def missing(paths: list[str]) -> list[str]:
        return [path for path in paths if not os.access(path, os.R_OK)]

    unseen = ray.get(missing.remote(probes))
    if unseen:
        raise DistributedError(f"a Ray worker cannot read {unseen[0]}: workers need the inputs at the same paths "
                               f"(shared storage){f' ({len(unseen) - 1} more)' if len(unseen) > 1 else ''}")


def _run_job(db: Database, url: str, tasks: list[VideoTask | ImageTask], options: IngestOptions, model_id: int,
             gpus: float, actors: int | None, summary: IngestSummary, observer: IngestObserver | None) -> set[int]:
    import ray.data

    items = [{"task": pickle.dumps(task)} for task in tasks]
    home = str(db.settings.home)
    dataset = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .flat_map(_decode, num_cpus=1)
        .map_batches(_Embed, fn_constructor_kwargs={"model": options.model, "device": options.device},
                     batch_size=options.batch_size, batch_format="numpy",
                     **embed_actor_options(gpus, actors))
        .map_batches(_write, fn_kwargs={"url": url, "home": home, "model_id": model_id,
                                        "fail_once": os.environ.get(FAIL_ONCE_ENV)},
                     # A writer whose worker dies is re-run by Ray (3 times by default); the
                     # ON CONFLICT load makes a re-run of a committed batch add nothing.
                     batch_size=options.batch_size, batch_format="numpy", num_cpus=0.5)
    )
    failed: set[int] = set()
    details: dict[int, dict[str, Any]] = defaultdict(dict)
    for row in dataset.iter_rows():
        message = pickle.loads(row["blob"]) if row["kind"] != "stored" else None
        if row["kind"] == "stored":
            summary.frames += int(row["count"])
            if observer is not None:
                observer.frames_stored(int(row["count"]))
        elif isinstance(message, SourceInfo):
            details[message.source_id].update(message.details)
        elif isinstance(message, InputFailed):
            failed.add(message.source_id)
            record_failure(db, summary, message)
    for source_id, values in details.items():
        update_source_details(db, source_id, **values)
    return failed


def embed_actor_options(gpus: float, actors: int | None = None) -> dict[str, Any]:
    """Ray options of the embedding actors: one GPU each on a cluster with GPUs (one actor per
    GPU by default), CPU actors otherwise."""
    return {"concurrency": actors or max(1, int(gpus)), "num_gpus": 1 if gpus >= 1 else 0}


def _decode(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One decoding task: its candidates (pickled) and its info and failure messages, in order."""
    from sisyphus_db.ingest.worker import decode_task

    out: list[dict[str, Any]] = []
    for message in decode_task(pickle.loads(row["task"])):
        if isinstance(message, Candidates):
            out.extend({"kind": "candidate", "blob": pickle.dumps(item)} for item in message.items)
        elif isinstance(message, TaskDone):
            if message.failed is not None:
                out.append({"kind": "message", "blob": pickle.dumps(message.failed)})
        else:
            out.append({"kind": "message", "blob": pickle.dumps(message)})
    return out


class _Embed:
    """An actor holding the model: embeds the candidates of a batch, passes messages through."""

    def __init__(self, model: str, device: str) -> None:
        from sisyphus_db.embed.embedder import load_embedder

        self.embedder = load_embedder(model, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kinds, blobs = list(batch["kind"]), list(batch["blob"])
        rows = [i for i, kind in enumerate(kinds) if kind == "candidate"]
        if rows:
            candidates: list[Candidate] = [pickle.loads(blobs[i]) for i in rows]
            vectors = self.embedder.embed_prepared(np.stack([item.prepared for item in candidates]))
            for i, item, vector in zip(rows, candidates, vectors, strict=True):
                item.prepared = np.empty(0, dtype=np.float32)  # the pixels are not needed any more
                blobs[i] = pickle.dumps((item, vector.astype(np.float32)))
        return {"kind": np.asarray(kinds, dtype=object), "blob": np.asarray(blobs, dtype=object)}


_databases: dict[str, Database] = {}


def _worker_database(url: str, home: str) -> Database:
    """One checked connection pool per writer process and URL."""
    from sisyphus_db.config import Settings
    from sisyphus_db.db.database import open_database

    if url not in _databases:
        _databases[url] = open_database(Settings(home=Path(home), database_url=url))
    return _databases[url]


def _write(batch: dict[str, np.ndarray], *, url: str, home: str, model_id: int,
           fail_once: str | None = None) -> dict[str, np.ndarray]:
    """A writer task: the batch's frames in one COPY transaction; messages go on to the driver."""
    from sisyphus_db.ingest.pipeline import frame_rows

    db = _worker_database(url, home)
    kinds = list(batch["kind"])
    pairs = [pickle.loads(blob) for kind, blob in zip(kinds, batch["blob"], strict=True) if kind == "candidate"]
    out_kinds: list[str] = []
    out_blobs: list[bytes] = []
    counts: list[int] = []
    for kind, blob in zip(kinds, batch["blob"], strict=True):
        if kind == "message":
            out_kinds.append("message")
            out_blobs.append(blob)
            counts.append(0)
    if pairs:
        from sisyphus_db.store.bulk import load_frames

        items = [item for item, _ in pairs]
        vectors = np.stack([vector for _, vector in pairs])
        result = load_frames(db, model_id, frame_rows(items, db.settings.frames_dir), vectors)
        if fail_once:
            _fail_once(fail_once)
        out_kinds.append("stored")
        out_blobs.append(b"")
        counts.append(result.frames_added)
    return {"kind": np.asarray(out_kinds, dtype=object), "blob": np.asarray(out_blobs, dtype=object),
            "count": np.asarray(counts, dtype=np.int64)}


def _fail_once(marker: str) -> None:
    if not os.path.exists(marker):
        Path(marker).write_text("failed once\n")
        os._exit(1)
