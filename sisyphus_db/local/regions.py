"""Region vectors: each frame's feature map pooled over the multi-scale grid, stored in `regions`.

`build_regions` computes them for the frames of a model that have none yet (reading the
frame images from their stored paths), a batch per transaction: a killed build resumes
where it stopped and a second build adds nothing (the table is unique per box).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from pgvector import HalfVector

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError, MediaError
from sisyphus_db.local.features import feature_maps, local_size
from sisyphus_db.local.grid import DEFAULT_SCALES, Region, cells_to_pixels, region_grid
from sisyphus_db.store.registry import StoredModel

logger = logging.getLogger(__name__)

REGION_POOLINGS = ("max", "gem")
GEM_P = 3.0
DEFAULT_BATCH_SIZE = 16
Progress = Callable[[str, int, int | None], None]


def pool_regions(fmap: npt.NDArray[np.float32], regions: Sequence[Region],
                 pooling: str = "max") -> npt.NDArray[np.float32]:
    """One (C, h, w) map -> (len(regions), C) unit vectors, max (MAC) or GeM over each region."""
    if pooling not in REGION_POOLINGS:
        raise InputError(f"unknown region pooling {pooling!r}: choose one of {', '.join(REGION_POOLINGS)}")
    out = np.empty((len(regions), fmap.shape[0]), dtype=np.float32)
    powered = np.power(np.maximum(fmap, 1e-6), GEM_P) if pooling == "gem" else None
    for i, region in enumerate(regions):
        if powered is not None:
            out[i] = powered[:, region.r0:region.r1, region.c0:region.c1].mean(axis=(1, 2)) ** (1.0 / GEM_P)
        else:
            out[i] = fmap[:, region.r0:region.r1, region.c0:region.c1].max(axis=(1, 2))
    return unit_rows(out)


def unit_rows(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class FrameRegions:
    """The regions of one frame: boxes in pixels, their scales and unit vectors."""

    frame_id: int
    scales: list[int]
    boxes: list[tuple[int, int, int, int]]
    vectors: npt.NDArray[np.float32]


def frame_regions(frame_id: int, fmap: npt.NDArray[np.float32], width: int, height: int,
                  scales: int = DEFAULT_SCALES, pooling: str = "max") -> FrameRegions:
    grid = region_grid(fmap.shape[1], fmap.shape[2], scales)
    boxes = [cells_to_pixels(region, fmap.shape[1], fmap.shape[2], width, height) for region in grid]
    return FrameRegions(frame_id, [r.scale for r in grid], boxes, pool_regions(fmap, grid, pooling))


_STAGE = ("frame_id bigint, scale smallint, x0 integer, y0 integer, x1 integer, y1 integer, vec halfvec")


def store_regions(db: Database, model_id: int, items: Sequence[FrameRegions]) -> int:
    """COPY the regions of some frames in one transaction; boxes already stored are skipped."""
    if not items:
        return 0
    with db.copy_connection() as conn:
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS region_stage ({_STAGE}) ON COMMIT DELETE ROWS")
        conn.execute("TRUNCATE region_stage")  # a savepoint does not trigger ON COMMIT
        with conn.cursor().copy("COPY region_stage (frame_id, scale, x0, y0, x1, y1, vec) FROM STDIN "
                                "(FORMAT BINARY)") as copy:
            copy.set_types(["bigint", "smallint", "integer", "integer", "integer", "integer", "halfvec"])
            for item in items:
                for scale, box, vector in zip(item.scales, item.boxes, item.vectors, strict=True):
                    copy.write_row((item.frame_id, scale, *box, HalfVector(vector)))
        # The join drops frames deleted while their regions were computed.
        added = conn.execute(
            "INSERT INTO regions (frame_id, model_id, scale, x0, y0, x1, y1, vec) "
            "SELECT s.frame_id, %s, s.scale, s.x0, s.y0, s.x1, s.y1, s.vec FROM region_stage s "
            "JOIN frames f ON f.id = s.frame_id "
            "ON CONFLICT (model_id, frame_id, x0, y0, x1, y1) DO NOTHING", (model_id,)).rowcount
    return int(added)


@dataclass(frozen=True)
class PendingFrame:
    frame_id: int
    path: str
    width: int
    height: int


def frames_without_regions(db: Database, model: StoredModel, limit: int | None = None) -> list[PendingFrame]:
    """Frames with a vector under the model and no regions yet, by id."""
    sql = ("SELECT f.id, f.path, f.width, f.height FROM frames f JOIN embeddings e ON e.frame_id = f.id "
           "AND e.model_id = :m WHERE NOT EXISTS (SELECT 1 FROM regions r WHERE r.model_id = :m "
           "AND r.frame_id = f.id) ORDER BY f.id" + (" LIMIT :n" if limit else ""))
    with db.transaction() as conn:
        rows = conn.execute(sa.text(sql), {"m": model.id, "n": limit}).all()
    return [PendingFrame(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


@dataclass
class RegionsReport:
    model: str
    frames: int = 0
    regions: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    size: int = 0
    scales: int = DEFAULT_SCALES

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "frames": self.frames, "regions": self.regions, "skipped": self.skipped,
                "failed": len(self.failed), "errors": self.failed[:20], "seconds": round(self.seconds, 3),
                "input_size": self.size, "scales": self.scales}


def build_regions(db: Database, model: StoredModel, *, batch_size: int = DEFAULT_BATCH_SIZE,
                  scales: int = DEFAULT_SCALES, pooling: str = "max", device: str = "auto",
                  progress: Progress | None = None) -> RegionsReport:
    """Region vectors for every frame of the model that has none; resumable, idempotent."""
    from sisyphus_db.embed.embedder import load_embedder
    from sisyphus_db.media.images import load_image

    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if pooling not in REGION_POOLINGS:
        raise InputError(f"unknown region pooling {pooling!r}: choose one of {', '.join(REGION_POOLINGS)}")
    started = time.perf_counter()
    embedder = load_embedder(model.name, device=device)
    if embedder.spec.dim != model.dim:
        raise InputError(f"model {model.name} now makes {embedder.spec.dim}-d vectors, the stored ones are {model.dim}-d")
    pending = frames_without_regions(db, model)
    report = RegionsReport(model.name, size=local_size(embedder), scales=scales)
    if progress is not None:
        progress("regions: frames", 0, len(pending))
    for start in range(0, len(pending), batch_size):
        batch = pending[start:start + batch_size]
        images, kept = [], []
        for frame in batch:
            try:
                images.append(load_image(frame.path).rgb)
                kept.append(frame)
            except (MediaError, OSError) as exc:
                report.failed.append(f"frame {frame.frame_id} ({frame.path}): {exc}")
        maps = feature_maps(embedder, images, batch_size=batch_size)
        items = [frame_regions(frame.frame_id, fmap, frame.width, frame.height, scales, pooling)
                 for frame, fmap in zip(kept, maps, strict=True)]
        added = store_regions(db, model.id, items)
        report.frames += len(items)
        report.regions += added
        report.skipped += len(batch) - len(kept)
        if progress is not None:
            progress("regions: frames", len(batch), None)
    report.seconds = time.perf_counter() - started
    for failure in report.failed[:5]:
        logger.warning("regions: cannot read %s", failure)
    return report

