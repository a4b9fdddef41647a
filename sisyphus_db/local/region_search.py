"""`search --method regions`: nearest region vectors, best region per frame, exact rerank.

Runs as a method of the search planner (sisyphus_db.search.engine): the planner keeps k,
--per-source, the deepening loop, the metadata join and the stored run; this module
only turns a depth into frames. Regions are found through their own faiss sidecar
(`sisyphus index build --kind regions`), re-ranked exactly with their vectors from
PostgreSQL, grouped by frame (the best region wins) and filtered with --where.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.search.backends import Neighbours
from sisyphus_db.search.filters import FrameFilter, Where
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import REGIONS, vectors_by_id

REGIONS_PER_FRAME_FETCH = 8  # region candidates fetched per wanted frame (several regions of a frame match)


class RegionMethod:
    """The regions of the nearest frames, for the planner's method hook."""

    name = "regions"

    def __init__(self, db: Database, model: StoredModel, query: npt.NDArray[np.float32], *,
                 where: Where | None = None, nprobe: int | None = None) -> None:
        from sisyphus_db.search.indexing import load_faiss_index, require_faiss_record

        self.db, self.model, self.query = db, model, query.astype(np.float32)
        self.record = require_faiss_record(db, model, REGIONS.kind)
        self.index = load_faiss_index(self.record)
        self.nprobe = nprobe or self.record.params.get("nprobe")
        self.filter = FrameFilter(db, where, model.id) if where else None
        self.boxes: dict[int, tuple[int, int, int, int]] = {}
        self.region_ids: dict[int, int] = {}
        self.params: dict[str, Any] = {"nprobe": self.nprobe, "region_index": self.record.factory}
        self.warnings: list[str] = []
        with db.transaction() as conn:
            newer = conn.execute(sa.text("SELECT count(*) FROM regions WHERE model_id = :m AND id > :w"),
                                 {"m": model.id, "w": self.record.watermark}).scalar_one()
        if newer:
            self.warnings.append(f"{newer} regions are newer than the region index and not searched: "
                                 "run `sisyphus index update --kind regions`")

    def neighbours(self, depth: int) -> tuple[Neighbours, bool]:
        from sisyphus_db.ann.search import exact_rerank, search

        ntotal = int(self.index.ntotal)
        fetch = min(ntotal, max(depth * REGIONS_PER_FRAME_FETCH, int(self.record.params.get("rerank_k") or 0)))
        _, found = search(self.index, self.query[None, :], fetch, nprobe=self.nprobe)
        candidates = found[0][found[0] >= 0]
        exhausted = candidates.size < fetch or fetch >= ntotal
        ids, vectors = vectors_by_id(self.db, self.model.id, self.model.dim, candidates, table=REGIONS)
        self.params["regions_reranked"] = int(ids.size)
        if ids.size == 0:
            return (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)), exhausted
        ranked, distances = exact_rerank(self.query, ids, vectors, int(ids.size))
        frames, boxes = _region_frames(self.db, ranked)
        best: dict[int, tuple[float, int]] = {}
        for region_id, distance in zip(ranked.tolist(), distances.tolist(), strict=True):
            frame_id = frames.get(region_id)
            if frame_id is not None and frame_id not in best:
                best[frame_id] = (distance, region_id)  # ranked nearest first: the first region wins
        frame_ids = np.fromiter(best, dtype=np.int64, count=len(best))
        if self.filter is not None and frame_ids.size:
            passing = set(self.filter.among(np.sort(frame_ids)).tolist())
            frame_ids = np.array([f for f in frame_ids.tolist() if f in passing], dtype=np.int64)
        chosen = frame_ids[:depth]
        for frame_id in chosen.tolist():
            region_id = best[frame_id][1]
            self.boxes[frame_id] = boxes[region_id]
            self.region_ids[frame_id] = region_id
        dist = np.array([best[f][0] for f in chosen.tolist()], dtype=np.float32)
        return (chosen, dist), exhausted


def _region_frames(db: Database, region_ids: npt.NDArray[np.int64]
                   ) -> tuple[dict[int, int], dict[int, tuple[int, int, int, int]]]:
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT id, frame_id, x0, y0, x1, y1 FROM regions WHERE id = ANY(:ids)"),
                            {"ids": [int(i) for i in region_ids]}).all()
    return ({int(r[0]): int(r[1]) for r in rows},
            {int(r[0]): (int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows})
