"""GET /api/sources (paginated), /api/sources/{id}, its key-frame timeline and its video file."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from sisyphus_db.label.labels import labels_of_frames
from sisyphus_db.serve.deps import page_bounds, server
from sisyphus_db.serve.errors import NotFoundError
from sisyphus_db.serve.results import image_url, thumbnail_url, video_url
from sisyphus_db.serve.routers.search import ERRORS
from sisyphus_db.serve.schemas import SourceItem, SourcePage, TimelinePage
from sisyphus_db.serve.state import ServerState

router = APIRouter(prefix="/api/sources", tags=["sources"])
MAX_PAGE = 1000

_SOURCE_COLUMNS = ("s.id, s.uri, s.kind, s.state, s.duration_seconds, s.fps, s.width, s.height, s.codec, "
                   "s.keyframe_method, s.tags, s.created_at")


def _source_items(state: ServerState, rows: list[Any]) -> list[dict[str, Any]]:
    ids = [row["id"] for row in rows]
    with state.db.transaction() as conn:
        # Per listed source only: the (source_id, ...) unique index answers these without a scan.
        counts = dict(conn.execute(sa.text(
            "SELECT source_id, count(*) FROM frames WHERE source_id = ANY(:ids) GROUP BY source_id"),
            {"ids": ids}).all())
        firsts = dict(conn.execute(sa.text(
            "SELECT DISTINCT ON (source_id) source_id, id FROM frames WHERE source_id = ANY(:ids) "
            "ORDER BY source_id, pts_seconds, frame_index, id"), {"ids": ids}).all())
    items = []
    for row in rows:
        item = dict(row)
        item["created_at"] = row["created_at"].isoformat()
        item["frames"] = int(counts.get(row["id"], 0))
        item["video_url"] = video_url(row["id"], row["kind"])
        first = firsts.get(row["id"])
        item["first_frame_id"] = first
        item["thumbnail_url"] = thumbnail_url(first) if first is not None else None
        items.append(item)
    return items


def source_row(state: ServerState, source_id: int) -> dict[str, Any]:
    with state.db.transaction() as conn:
        row = conn.execute(sa.text(f"SELECT {_SOURCE_COLUMNS} FROM sources s WHERE s.id = :s"),
                           {"s": source_id}).mappings().first()
    if row is None:
        raise NotFoundError(f"source {source_id} does not exist")
    return dict(row)


@router.get("", response_model=SourcePage, responses=ERRORS)
def list_sources(offset: int | None = None, limit: int | None = None, page: int | None = None,
                 per_page: int | None = None,
                 q: str | None = Query(default=None, max_length=500, description="only sources whose uri contains this"),
                 kind: str | None = None, state: ServerState = Depends(server)) -> dict[str, Any]:
    """Sources in id order, a page at a time (offset/limit or page/per_page), with the total."""
    start, size = page_bounds(offset, limit, page, per_page, 100, MAX_PAGE)
    conditions, params = [], {"offset": start, "limit": size}
    if q:
        # The text is a bound value and its LIKE wildcards are escaped: it matches literally.
        conditions.append("s.uri LIKE :q ESCAPE '\\'")
        params["q"] = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if kind:
        conditions.append("s.kind = :kind")
        params["kind"] = kind
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    with state.db.transaction() as conn:
        total = int(conn.execute(sa.text(f"SELECT count(*) FROM sources s {where}"), params).scalar_one())
        rows = conn.execute(sa.text(f"SELECT {_SOURCE_COLUMNS} FROM sources s {where} ORDER BY s.id "
                                    "OFFSET :offset LIMIT :limit"), params).mappings().all()
    return {"total": total, "offset": start, "limit": size, "sources": _source_items(state, list(rows))}


@router.get("/{source_id}", response_model=SourceItem, responses=ERRORS)
def get_source(source_id: int, state: ServerState = Depends(server)) -> dict[str, Any]:
    return _source_items(state, [source_row(state, source_id)])[0]


@router.get("/{source_id}/frames", response_model=TimelinePage, responses=ERRORS)
def source_frames(source_id: int, offset: int | None = None, limit: int | None = None, page: int | None = None,
                  per_page: int | None = None, state: ServerState = Depends(server)) -> dict[str, Any]:
    """The source's key frames in time order (the timeline), a page at a time, each with its labels."""
    start, size = page_bounds(offset, limit, page, per_page, 500, MAX_PAGE)
    source_row(state, source_id)
    with state.db.transaction() as conn:
        total = int(conn.execute(sa.text("SELECT count(*) FROM frames WHERE source_id = :s"),
                                 {"s": source_id}).scalar_one())
        rows = conn.execute(sa.text(
            "SELECT id, frame_index, pts_seconds, width, height, keyframe_method, keyframe_score FROM frames "
            "WHERE source_id = :s ORDER BY pts_seconds, frame_index, id OFFSET :o LIMIT :l"),
            {"s": source_id, "o": start, "l": size}).mappings().all()
    labels = labels_of_frames(state.db, [row["id"] for row in rows])
    frames = [{**row, "thumbnail_url": thumbnail_url(row["id"]), "image_url": image_url(row["id"]),
               "labels": labels[row["id"]]} for row in rows]
    return {"total": total, "offset": start, "limit": size, "source_id": source_id, "frames": frames}


@router.get("/{source_id}/video", response_class=FileResponse, responses=ERRORS)
def source_video(source_id: int, state: ServerState = Depends(server)) -> FileResponse:
    """The source's video file, with HTTP Range support so a browser can seek to a frame's time."""
    row = source_row(state, source_id)
    if row["kind"] != "video":
        raise NotFoundError(f"source {source_id} is a {row['kind']}, not a video")
    path = Path(row["uri"])
    if not path.is_file():
        raise NotFoundError(f"the video file of source {source_id} is missing: {path}")
    media_type = mimetypes.guess_type(path.name)[0] or "video/mp4"
    return FileResponse(path, media_type=media_type)
