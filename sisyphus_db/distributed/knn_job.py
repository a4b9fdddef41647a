"""`sisyphus knn-graph --ray`: the all-frames k-NN graph computed by Ray tasks, stored by the driver.

Each task loads the registered index file and its refine store from shared storage by
path (the registry row's path and checksums) and computes the edges of its share of the
frames exactly as the local graph does (search.knn_graph): with an IVF index and a refine
store, the members of a range of inverted lists (ann.knn_lists: exact blocks); otherwise,
or for frames newer than the index, a frame-id range searched one by one with the exact
rerank (ann.knn), its vectors read from the refine store or from PostgreSQL by URL. The
driver keeps the edges between live frames and COPYs them into knn_edges with the local
graph's own loader, in one transaction: a failed task leaves the previous graph in place.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.db.database import Database
from sisyphus_db.distributed.cluster import DistributedError, ray_cluster, worker_database_url
from sisyphus_db.search.indexing import require_faiss_record
from sisyphus_db.search.knn_graph import KnnGraphReport, _ranks_within_groups, _store_edges
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import frame_ids_of_model

Edges = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]


def run_ray_knn_graph(db: Database, model: StoredModel, *, k: int = 10, nprobe: int | None = None,
                      depth: int | None = None, address: str | None = None, tasks: int | None = None,
                      worker_url: str | None = None) -> KnnGraphReport:
    """Replace the model's knn_edges with the k nearest other frames of every frame, computed on Ray."""
    import faiss

    from sisyphus_db.search.indexing import load_faiss_index
    from sisyphus_db.search.refine_sidecar import load_refine

    started = time.perf_counter()
    url = worker_url or worker_database_url(db.settings, db.url)
    record = require_faiss_record(db, model)
    index = load_faiss_index(record)  # on the driver only to plan the split (lists, ids)
    store = load_refine(record)
    live = frame_ids_of_model(db, model.id)
    rerank_depth = max(k + 1, depth or int(record.params.get("rerank_k") or k + 1))
    probe = nprobe or record.params.get("nprobe")
    by_lists = store is not None and probe is not None and faiss.try_extract_index_ivf(index) is not None
    job = {"path": str(record.path), "sha256": str(record.sha256), "refine": (record.params or {}).get("refine"),
           "url": url, "home": str(db.settings.home), "model_id": model.id, "dim": model.dim, "k": k,
           "nprobe": int(probe) if probe is not None else None, "depth": rerank_depth,
           "watermark": record.watermark}
    with ray_cluster(address) as cluster:
        import ray

        count = tasks or max(1, 2 * int(cluster.cpus))
        job_ref, live_ref = ray.put(job), ray.put(live)
        task = ray.remote(num_cpus=1, max_retries=1)(knn_part)
        refs = []
        if by_lists:
            nlist = faiss.extract_index_ivf(index).nlist
            refs += [task.remote(job_ref, live_ref, "lists", int(part[0]), int(part[-1]) + 1)
                     for part in np.array_split(np.arange(nlist), min(count, nlist)) if part.size]
            newer = live[live > record.watermark]
            if newer.size:  # frames added since the index: searched one by one, as locally
                refs.append(task.remote(job_ref, live_ref, "ids", int(record.watermark), int(newer[-1])))
        else:
            refs += [task.remote(job_ref, live_ref, "ids", int(part[0]) - 1, int(part[-1]))
                     for part in np.array_split(live, min(count, max(1, live.size))) if part.size]
        try:
            parts: list[Edges] = ray.get(refs)
        except ray.exceptions.RayError as exc:
            # The other tasks are left to finish, as in index_job._add_shards (never force-cancelled).
            cause = str(getattr(exc, "cause", None) or exc).strip().splitlines()
            raise DistributedError(f"a k-NN task failed, the stored graph is unchanged: "
                                   f"{cause[-1] if cause else exc}") from None
    search_seconds = time.perf_counter() - started
    sources = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, dtype=np.int64)
    targets = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype=np.int64)
    distances = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, dtype=np.float32)
    order = np.argsort(sources, kind="stable")  # grouped by source, each source's edges nearest first
    sources, targets, distances = sources[order], targets[order], distances[order]
    keep = np.isin(targets, live)  # deleted frames linger in the index until `index update`
    sources, targets, distances = sources[keep], targets[keep], distances[keep]
    store_started = time.perf_counter()
    _store_edges(db, model.id, sources, _ranks_within_groups(sources), targets, distances)
    now = time.perf_counter()
    return KnnGraphReport(int(live.size), int(sources.size), k, now - started, search_seconds, now - store_started)


_cache: dict[tuple[str, str], tuple[Any, Any]] = {}


def _index_and_store(job: dict[str, Any]) -> tuple[Any, Any]:
    """The index and refine store, read once per worker process (checked against the registry's sha256)."""
    from sisyphus_db.ann.files import read_index
    from sisyphus_db.ann.refine import RefineFiles, open_refine

    key = (job["path"], job["sha256"])
    if key not in _cache:
        _cache.clear()
        index = read_index(job["path"], expected_sha256=job["sha256"], mmap=True)
        store = open_refine(RefineFiles.from_params(job["refine"])) if job["refine"] else None
        _cache[key] = (index, store)
    return _cache[key]


def knn_part(job: dict[str, Any], live: npt.NDArray[np.int64], mode: str, lo: int, hi: int) -> Edges:
    """One task: mode "lists" for inverted lists [lo, hi); mode "ids" for frame ids in (lo, hi]."""
    from sisyphus_db.ann.knn import knn_graph
    from sisyphus_db.ann.knn_lists import knn_graph_by_lists

    if not Path(job["path"]).exists():
        raise DistributedError(f"a Ray worker cannot read the index file {job['path']}: workers need it at the "
                               "same path (shared storage)")
    index, store = _index_and_store(job)
    if mode == "lists":
        return knn_graph_by_lists(index, store, job["k"], nprobe=job["nprobe"], live_ids=live, lists=range(lo, hi))
    ids, vectors = _range_vectors(job, store, live, lo, hi)
    return knn_graph(index, vectors, ids, job["k"], nprobe=job["nprobe"], refine=store,
                     depth=job["depth"] if store is not None else None)


def _range_vectors(job: dict[str, Any], store: Any, live: npt.NDArray[np.int64], lo: int,
                   hi: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The live frames in (lo, hi] with their vectors: from the refine store, newer ones from PostgreSQL."""
    from sisyphus_db.config import Settings
    from sisyphus_db.db.database import open_database
    from sisyphus_db.store.vectors import model_vectors

    wanted = live[(live > lo) & (live <= hi)]
    known = np.empty(0, dtype=np.int64)
    vectors = np.empty((0, job["dim"]), dtype=np.float32)
    if store is not None:
        known, vectors = store.vectors_of(wanted)
    if known.size == wanted.size:
        return known, vectors
    above = lo if store is None else max(lo, int(job["watermark"]))
    db = open_database(Settings(home=Path(job["home"]), database_url=job["url"]))
    try:
        newer_ids, newer = model_vectors(db, job["model_id"], job["dim"], above_id=above, up_to_id=hi)
    finally:
        db.dispose()
    extra = ~np.isin(newer_ids, known)
    ids = np.concatenate([known, newer_ids[extra]])
    return ids, (np.concatenate([vectors, newer[extra]]) if extra.any() else vectors)
