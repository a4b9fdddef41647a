"""`sisyphus cluster`: faiss k-means over a model's embeddings, each frame's cluster stored in `clusters`.

The vectors are L2-normalised, so the k-means is spherical (centroids renormalised each
iteration) and the stored distance is the cosine distance to the frame's centroid. faiss
trains on at most 256 points per centroid (its default sample) and then assigns every
frame. Small clusters far from every other centroid are the rare scenes: the report lists
clusters smallest first, and among equal sizes the most isolated first.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.ann.device import resolve_faiss_device
from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.label.binary_copy import copy_in
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import model_vectors

DEFAULT_NITER = 20
MAX_DEFAULT_K = 1024
MIN_POINTS_PER_CLUSTER = 5  # below this a "cluster" is little more than a frame; faiss itself wants 39


@dataclass(frozen=True)
class KMeansResult:
    centroids: npt.NDArray[np.float32]
    assignment: npt.NDArray[np.int64]
    distance: npt.NDArray[np.float32]   # cosine distance of each point to its centroid
    objective: float
    device: str
    seconds: float


def default_k(n: int) -> int:
    """About sqrt(n) clusters (1M frames: 1,000), at least 2, at most 1,024, with >= 5 frames each."""
    return max(2, min(MAX_DEFAULT_K, round(math.sqrt(n)), n // MIN_POINTS_PER_CLUSTER))


def check_k(n: int, k: int | None, model_name: str) -> int:
    if n < 2 * MIN_POINTS_PER_CLUSTER:
        raise InputError(f"model {model_name!r} has {n} frames: k-means needs at least "
                         f"{2 * MIN_POINTS_PER_CLUSTER} (ingest more first)")
    if k is None:
        return default_k(n)
    if isinstance(k, bool) or k < 2:
        raise InputError(f"--k must be at least 2, got {k}")
    if k > n:
        raise InputError(f"--k {k} is more than the {n} frames of model {model_name!r}")
    if k * MIN_POINTS_PER_CLUSTER > n:
        raise InputError(f"--k {k} leaves fewer than {MIN_POINTS_PER_CLUSTER} frames per cluster ({n} frames): "
                         f"use --k {n // MIN_POINTS_PER_CLUSTER} or less")
    return int(k)


def kmeans(vectors: npt.NDArray[np.float32], k: int, *, niter: int = DEFAULT_NITER, device: str = "auto",
           seed: int = 0, nredo: int = 1) -> KMeansResult:
    """Spherical faiss k-means (GPU when asked for or available) and every point's assignment.

    nredo > 1 runs k-means from that many random starts and keeps the best objective
    (random initialisation can put two centroids in one true cluster).
    """
    import faiss

    if niter < 1:
        raise InputError(f"--niter must be at least 1, got {niter}")
    if nredo < 1:
        raise InputError(f"--redo must be at least 1, got {nredo}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    used = resolve_faiss_device(device)
    started = time.perf_counter()
    # Our own floor (MIN_POINTS_PER_CLUSTER) decides; faiss would print a warning below 39 per centroid.
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, gpu=used == "cuda", verbose=False,
                      nredo=nredo, min_points_per_centroid=MIN_POINTS_PER_CLUSTER)
    km.train(x)
    _, found = km.index.search(x, 1)  # spherical: an inner-product index over unit centroids
    assignment = found[:, 0].astype(np.int64)
    centroids = np.asarray(km.centroids, dtype=np.float32)
    distance = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], 1 << 16):  # blocks keep the gathered centroids small
        part = slice(start, start + (1 << 16))
        distance[part] = 1.0 - np.einsum("ij,ij->i", x[part], centroids[assignment[part]])
    np.clip(distance, 0.0, 2.0, out=distance)
    objective = float(km.obj[-1]) if len(km.obj) else float("nan")
    return KMeansResult(centroids, assignment, distance, objective, used, time.perf_counter() - started)


def isolation(centroids: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Cosine distance from each centroid to its nearest other centroid (k x k, k is at most a few thousand)."""
    c = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    similarity = c @ c.T
    np.fill_diagonal(similarity, -np.inf)
    return (1.0 - similarity.max(axis=1)).astype(np.float32)


@dataclass(frozen=True)
class ClusterSummary:
    cluster: int
    size: int
    mean_distance: float
    max_distance: float
    sources: int
    isolation: float


@dataclass(frozen=True)
class ClusterReport:
    model: str
    frames: int
    k: int
    niter: int
    nredo: int
    device: str
    objective: float
    read_seconds: float
    kmeans_seconds: float
    write_seconds: float
    clusters: list[ClusterSummary] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        for key in ("read_seconds", "kmeans_seconds", "write_seconds"):
            document[key] = round(document[key], 3)
        return document


def cluster_frames(db: Database, model: StoredModel, *, k: int | None = None, niter: int = DEFAULT_NITER,
                   device: str = "auto", seed: int = 0, nredo: int = 1) -> ClusterReport:
    """k-means over the model's vectors; replaces the model's rows in `clusters`."""
    if niter < 1:
        raise InputError(f"--niter must be at least 1, got {niter}")
    if nredo < 1:
        raise InputError(f"--redo must be at least 1, got {nredo}")
    if k is not None and (isinstance(k, bool) or k < 2):
        raise InputError(f"--k must be at least 2, got {k}")
    resolve_faiss_device(device)  # a missing GPU fails before the vectors are read
    started = time.perf_counter()
    ids, vectors = model_vectors(db, model.id, model.dim)
    read_seconds = time.perf_counter() - started
    k = check_k(int(ids.size), k, model.name)
    result = kmeans(vectors, k, niter=niter, device=device, seed=seed, nredo=nredo)
    del vectors
    started = time.perf_counter()
    with db.copy_connection() as conn:
        conn.execute("DELETE FROM clusters WHERE model_id = %s", (model.id,))
        copy_in(conn, "clusters", [("model_id", "integer"), ("frame_id", "bigint"), ("cluster", "integer"),
                                   ("distance", "real")],
                {"model_id": model.id, "frame_id": ids, "cluster": result.assignment, "distance": result.distance},
                int(ids.size))
    write_seconds = time.perf_counter() - started
    isolated = isolation(result.centroids)
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT cluster, size, mean_distance, max_distance, sources FROM cluster_sizes "
                                    "WHERE model_id = :m"), {"m": model.id}).all()
    summaries = [ClusterSummary(int(r[0]), int(r[1]), float(r[2]), float(r[3]), int(r[4]), float(isolated[r[0]]))
                 for r in rows]
    summaries.sort(key=lambda c: (c.size, -c.isolation, c.cluster))
    return ClusterReport(model=model.name, frames=int(ids.size), k=k, niter=niter, nredo=nredo, device=result.device,
                         objective=result.objective, read_seconds=read_seconds, kmeans_seconds=result.seconds,
                         write_seconds=write_seconds, clusters=summaries)
