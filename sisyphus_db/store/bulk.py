"""Bulk loading of frames and their vectors with binary COPY, never row-by-row INSERT.

Each batch is COPYed into a temporary staging table and moved into `frames` and
`embeddings` in the same transaction, with ON CONFLICT DO NOTHING: a batch lands whole or
not at all, and loading the same frames again adds nothing (resume after a kill).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from pgvector import HalfVector
from psycopg.types.json import Jsonb

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError

STAGE_COLUMNS = (
    ("source_id", "bigint"),
    ("frame_index", "integer"),
    ("pts_seconds", "double precision"),
    ("path", "text"),
    ("width", "integer"),
    ("height", "integer"),
    ("sha256", "text"),
    ("captured_at", "timestamptz"),
    ("keyframe_method", "text"),
    ("keyframe_score", "real"),
    ("metadata", "jsonb"),
    ("vec", "halfvec"),
)
FRAME_COLUMNS = ", ".join(name for name, _ in STAGE_COLUMNS[:-1])
FRAME_KEY = "source_id, frame_index, path"


@dataclass(frozen=True)
class FrameRow:
    source_id: int
    frame_index: int
    pts_seconds: float
    path: str
    width: int
    height: int
    sha256: str
    keyframe_method: str
    keyframe_score: float | None = None
    captured_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadResult:
    frames_added: int
    embeddings_added: int


def load_frames(db: Database, model_id: int, rows: list[FrameRow], vectors: np.ndarray) -> LoadResult:
    """Store frames and their vectors under one model in one transaction; duplicates are skipped."""
    if len(rows) != len(vectors):
        raise InputError(f"{len(rows)} frames but {len(vectors)} vectors")
    if not rows:
        return LoadResult(0, 0)
    with db.copy_connection() as conn:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS frame_stage ("
            + ", ".join(f"{name} {kind}" for name, kind in STAGE_COLUMNS)
            + ") ON COMMIT DELETE ROWS"
        )
        conn.execute("TRUNCATE frame_stage")  # a savepoint does not trigger ON COMMIT
        columns = ", ".join(name for name, _ in STAGE_COLUMNS)
        with conn.cursor().copy(f"COPY frame_stage ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([kind for _, kind in STAGE_COLUMNS])
            for row, vector in zip(rows, vectors, strict=True):
                copy.write_row((
                    row.source_id, row.frame_index, row.pts_seconds, row.path, row.width, row.height,
                    row.sha256, _aware(row.captured_at), row.keyframe_method, row.keyframe_score,
                    Jsonb(row.metadata), HalfVector(vector),
                ))
        frames_added = conn.execute(
            f"INSERT INTO frames ({FRAME_COLUMNS}) SELECT {FRAME_COLUMNS} FROM frame_stage "
            f"ON CONFLICT ({FRAME_KEY}) DO NOTHING"
        ).rowcount
        embeddings_added = conn.execute(
            "INSERT INTO embeddings (frame_id, model_id, vec) "
            f"SELECT f.id, %s, s.vec FROM frame_stage s JOIN frames f USING ({FRAME_KEY}) "
            "ON CONFLICT (frame_id, model_id) DO NOTHING",
            (model_id,),
        ).rowcount
    return LoadResult(frames_added=frames_added, embeddings_added=embeddings_added)


def _aware(moment: datetime | None) -> datetime | None:
    """A timezone-aware datetime for the binary timestamptz dumper, which refuses naive ones.

    EXIF capture times carry no zone; storing the camera's wall-clock reading as UTC keeps
    it unchanged whatever the server's or the session's TimeZone is.
    """
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)
