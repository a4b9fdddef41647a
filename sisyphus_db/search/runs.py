"""Search results joined back in SQL, and stored as search_runs / search_results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.db.models import SearchResult, SearchRun


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


def frame_details(db: Database, frame_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Frame and source columns for these frames; frames that are gone are left out."""
    if not frame_ids:
        return {}
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT f.id, f.path, s.uri, f.pts_seconds, f.source_id, f.frame_index, f.width, f.height, s.kind, s.tags "
            "FROM frames f JOIN sources s ON s.id = f.source_id WHERE f.id = ANY(:ids)"
        ), {"ids": list(frame_ids)}).all()
    return {row[0]: {"path": row[1], "source_uri": row[2], "pts_seconds": row[3], "source_id": row[4],
                     "frame_index": row[5], "width": row[6], "height": row[7], "source_kind": row[8],
                     "tags": row[9]} for row in rows}


def save_run(db: Database, *, model_id: int, query: dict[str, Any], where: str | None, backend: str, k: int,
             params: dict[str, Any], elapsed_ms: float, name: str | None, hits: Sequence[SearchHit]) -> int:
    with db.transaction() as conn:
        run_id = conn.execute(sa.insert(SearchRun).values(
            name=name, model_id=model_id, query=query, filter=where, backend=backend, k=k, params=params,
            elapsed_ms=elapsed_ms,
        ).returning(SearchRun.id)).scalar_one()
        if hits:
            conn.execute(sa.insert(SearchResult), [
                {"run_id": run_id, "rank": hit.rank, "frame_id": hit.frame_id, "distance": hit.distance}
                for hit in hits
            ])
    return int(run_id)
