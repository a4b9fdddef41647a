"""`sisyphus colour build`: colour palette vectors for frames that are already ingested.

The `colour` model (sisyphus_db.embed.colour) is an ordinary model to the rest of the system:
its vectors go into `embeddings` through the COPY loader (the frames exist already, so only
vectors are added) and `search --model colour`, `index build --model colour` and
`segments build --model colour` (a video's colour signature over time) work as for any model.
`sisyphus ingest --model colour` computes them at ingest instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import MediaError
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import register_model

BATCH = 128
Progress = Callable[[str, int, int | None], None]


@dataclass
class ColourReport:
    model: str
    added: int
    failed: int
    total: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "added": self.added, "failed": self.failed, "total": self.total,
                "seconds": round(self.seconds, 3)}


def build_colour(db: Database, *, device: str = "auto", progress: Progress | None = None) -> ColourReport:
    from sisyphus_db.embed.embedder import load_embedder
    from sisyphus_db.embed.models import COLOUR
    from sisyphus_db.embed.preprocess import prepare_image
    from sisyphus_db.media.images import load_image

    started = time.perf_counter()
    embedder = load_embedder(COLOUR, device=device)
    spec = embedder.spec
    model = register_model(db, name=spec.name, dim=spec.dim, weights_sha256=spec.weights_sha256,
                           pooling=spec.pooling, preprocessing=spec.preprocessing)
    with db.transaction() as conn:
        todo = conn.execute(sa.text(
            "SELECT f.source_id, f.frame_index, f.pts_seconds, f.path, f.width, f.height, f.sha256, "
            "f.keyframe_method FROM frames f WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
            "WHERE e.frame_id = f.id AND e.model_id = :m) ORDER BY f.id"), {"m": model.id}).all()
    if progress is not None:
        progress("colour: frames", 0, len(todo))
    added = failed = 0
    for start in range(0, len(todo), BATCH):
        rows, prepared = [], []
        for row in todo[start:start + BATCH]:
            try:
                prepared.append(prepare_image(load_image(row.path).rgb, spec.preprocessing))
            except MediaError:
                failed += 1
                continue
            rows.append(FrameRow(source_id=row.source_id, frame_index=row.frame_index, pts_seconds=row.pts_seconds,
                                 path=row.path, width=row.width, height=row.height, sha256=row.sha256,
                                 keyframe_method=row.keyframe_method))
        if rows:
            vectors = embedder.embed_prepared(np.stack(prepared))
            added += load_frames(db, model.id, rows, vectors).embeddings_added
        if progress is not None:
            progress("colour: frames", len(todo[start:start + BATCH]), len(todo))
    with db.transaction() as conn:
        total = int(conn.execute(sa.text("SELECT count(*) FROM embeddings WHERE model_id = :m"),
                                 {"m": model.id}).scalar_one())
    return ColourReport(model.name, added, failed, total, time.perf_counter() - started)
