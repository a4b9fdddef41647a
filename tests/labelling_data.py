"""Small generated worlds for the propagate / dedup / cluster / export tests.

`make_world` stores frames of a few sources with given unit vectors (optionally with a real
small JPEG per frame, so exports and videos have files to copy and decode), and
`store_edges` writes a k-NN graph into knn_edges exactly as `sisyphus knn-graph` lays it
out (frame_id, rank, neighbor_id, distance), either planted by hand or computed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from PIL import Image, ImageDraw

from sisyphus_db.db.database import Database
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import StoredModel, register_model, upsert_source


@dataclass
class World:
    model: StoredModel
    ids: npt.NDArray[np.int64]          # frame ids in the order of the given vectors
    source_of: npt.NDArray[np.int64]    # each frame's source id
    source_ids: list[int]
    vectors: npt.NDArray[np.float32]
    paths: list[str]


def unit(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def write_image(path: Path, number: int, size: tuple[int, int] = (96, 64)) -> None:
    rng = np.random.default_rng(number)
    image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 255, 3)))
    ImageDraw.Draw(image).rectangle((8, 8, 8 + number % 40, 40), fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)


def make_world(db: Database, vectors: npt.NDArray[np.float32], sources: list[int], *, name: str = "lab-16",
               image_dir: Path | None = None, prefix: str = "/lab") -> World:
    """Frame i gets vectors[i] and lives in source number sources[i]; with image_dir, a real JPEG each."""
    vectors = unit(vectors)
    model = register_model(db, name=name, dim=vectors.shape[1], weights_sha256="ab" * 32, pooling="avg",
                           preprocessing={})
    numbers = sorted(set(sources))
    source_ids = [upsert_source(db, uri=f"{prefix}/clip-{s}.mp4", kind="video", tags={}).id for s in numbers]
    by_number = dict(zip(numbers, source_ids, strict=True))
    rows, paths = [], []
    for i, s in enumerate(sources):
        if image_dir is not None:
            path = image_dir / f"clip-{s}" / f"{i:05d}.jpg"
            write_image(path, i)
        else:
            path = Path(f"{prefix}/clip-{s}/{i:05d}.jpg")
        paths.append(str(path))
        rows.append(FrameRow(source_id=by_number[s], frame_index=i, pts_seconds=i * 0.5, path=str(path), width=96,
                             height=64, sha256=f"{i:064x}", keyframe_method="fps"))
    load_frames(db, model.id, rows, vectors)
    with db.transaction() as conn:
        found = dict(conn.execute(sa.text("SELECT path, id FROM frames WHERE path = ANY(:p)"), {"p": paths}).all())
    ids = np.array([found[p] for p in paths], dtype=np.int64)
    return World(model, ids, np.array([by_number[s] for s in sources], dtype=np.int64), source_ids, vectors, paths)


def store_edges(db: Database, model: StoredModel, source: list[int] | npt.NDArray[np.int64],
                target: list[int] | npt.NDArray[np.int64], distance: list[float] | npt.NDArray[np.floating]) -> None:
    """Replace the model's knn_edges; edges of one frame are ranked by distance."""
    src, dst, dist = (np.asarray(source, np.int64), np.asarray(target, np.int64), np.asarray(distance, np.float64))
    order = np.lexsort((dist, src))
    src, dst, dist = src[order], dst[order], dist[order]
    starts = np.r_[0, np.flatnonzero(np.diff(src)) + 1]
    ranks = np.arange(src.size) - np.repeat(starts, np.diff(np.r_[starts, src.size])) + 1
    with db.transaction() as conn:
        conn.execute(sa.text("DELETE FROM knn_edges WHERE model_id = :m"), {"m": model.id})
        conn.execute(sa.text(
            "INSERT INTO knn_edges (model_id, frame_id, rank, neighbor_id, distance) "
            "SELECT :m, * FROM unnest(CAST(:s AS bigint[]), CAST(:r AS int[]), CAST(:t AS bigint[]), "
            "CAST(:d AS real[]))"),
            {"m": model.id, "s": src.tolist(), "r": ranks.tolist(), "t": dst.tolist(), "d": dist.tolist()})


Edges = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]


def exact_knn_edges(world: World, k: int) -> Edges:
    """The exact k nearest other frames of every frame (cosine distance), as knn-graph would store them."""
    v = world.vectors.astype(np.float64)
    distance = 1.0 - v @ v.T
    np.fill_diagonal(distance, np.inf)
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(len(v)), k)
    return world.ids[rows], world.ids[nearest.ravel()], distance[rows, nearest.ravel()]


def count_rows(db: Database, table: str) -> int:
    with db.transaction() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
