"""Search results joined back in SQL, and stored as search_runs / search_results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.db.models import SearchRun


@dataclass(frozen=True)
class SearchHit:
    rank: int
    frame_id: int
    distance: float
    path: str
    source_uri: str
    pts_seconds: float
    source_id: int
    frame_index: int
    width: int
    height: int
    source_kind: str
    tags: dict[str, Any]
    # Where in the frame the match is (x0, y0, x1, y1 pixels): set by local methods (regions, bow).
    box: tuple[int, int, int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        if self.box is None:
            del document["box"]
        else:
            document["box"] = list(self.box)
        return document


# The metadata a hit carries, in the order `hit_details` reads them (frames JOIN sources).
DETAIL_COLUMNS = ("frames.path, sources.uri, frames.pts_seconds, frames.source_id, frames.frame_index, "
                  "frames.width, frames.height, sources.kind, sources.tags")


def hit_details(row: Sequence[Any]) -> dict[str, Any]:
    """A SearchHit's metadata from the DETAIL_COLUMNS values of one row."""
    return {"path": row[0], "source_uri": row[1], "pts_seconds": row[2], "source_id": row[3],
            "frame_index": row[4], "width": row[5], "height": row[6], "source_kind": row[7], "tags": row[8]}


def frame_details(db: Database, frame_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Frame and source columns for these frames; frames that are gone are left out."""
    if not frame_ids:
        return {}
    # On the driver connection: every search runs this, and SQLAlchemy's statement handling
    # cost about as much as the query (0.43 against 0.24 ms for 10 frames at 100k).
    with db.copy_connection() as conn:
        rows = conn.execute(_DETAILS, ([int(i) for i in frame_ids],)).fetchall()
    return {row[0]: hit_details(row[1:]) for row in rows}


_DETAILS = (f"SELECT frames.id, {DETAIL_COLUMNS} FROM frames JOIN sources ON sources.id = frames.source_id "
            "WHERE frames.id = ANY(%s)")


def save_run(db: Database, *, model_id: int, query: dict[str, Any], where: str | None, backend: str, k: int,
             params: dict[str, Any], elapsed_ms: float, name: str | None, hits: Sequence[SearchHit]) -> int:
    # One statement (a data-modifying CTE): the run and its results land together in one round
    # trip, atomically even on a connection in autocommit mode (the server's search pool).
    with db.transaction() as conn:
        run_id = conn.execute(_SAVE_RUN, {
            "name": name, "model_id": model_id, "query": query, "filter": where, "backend": backend, "k": k,
            "params": params, "elapsed_ms": elapsed_ms, "ranks": [hit.rank for hit in hits],
            "frames": [hit.frame_id for hit in hits], "distances": [hit.distance for hit in hits],
        }).scalar_one()
    return int(run_id)


_SAVE_RUN = sa.text(
    "WITH run AS (INSERT INTO search_runs (name, model_id, query, filter, backend, k, params, elapsed_ms) "
    "VALUES (:name, :model_id, :query, :filter, :backend, :k, :params, :elapsed_ms) RETURNING id), "
    "hits AS (INSERT INTO search_results (run_id, rank, frame_id, distance) "
    "SELECT run.id, h.rank, h.frame_id, h.distance FROM run, unnest(CAST(:ranks AS integer[]), "
    "CAST(:frames AS bigint[]), CAST(:distances AS real[])) AS h(rank, frame_id, distance)) "
    "SELECT id FROM run"
).bindparams(sa.bindparam("query", type_=SearchRun.__table__.c.query.type),
             sa.bindparam("params", type_=SearchRun.__table__.c.params.type))
