"""GET /api/frames/{id}, its full image and its thumbnail.

Files are found through the frame's stored row only: no URL ever names a path.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from sisyphus_db.label.labels import labels_of_frames
from sisyphus_db.serve.deps import server
from sisyphus_db.serve.errors import NotFoundError
from sisyphus_db.serve.results import image_url, thumbnail_url, video_url
from sisyphus_db.serve.routers.search import ERRORS
from sisyphus_db.serve.schemas import FrameDetail
from sisyphus_db.serve.state import ServerState
from sisyphus_db.serve.thumbnails import make_thumbnail, thumbnail_path

router = APIRouter(prefix="/api/frames", tags=["frames"])
CACHE_IMMUTABLE = "private, max-age=86400"


def frame_row(state: ServerState, frame_id: int) -> dict[str, Any]:
    with state.db.transaction() as conn:
        row = conn.execute(sa.text(
            "SELECT f.id, f.source_id, s.uri AS source_uri, s.kind AS source_kind, f.frame_index, f.pts_seconds, "
            "f.path, f.width, f.height, f.sha256, f.captured_at, f.keyframe_method, f.keyframe_score, "
            "f.metadata, s.tags FROM frames f JOIN sources s ON s.id = f.source_id WHERE f.id = :f"),
            {"f": frame_id}).mappings().first()
    if row is None:
        raise NotFoundError(f"frame {frame_id} does not exist")
    return dict(row)


@router.get("/{frame_id}", response_model=FrameDetail, responses=ERRORS)
def get_frame(frame_id: int, state: ServerState = Depends(server)) -> dict[str, Any]:
    """A frame's columns, its source's tags and the labels it carries."""
    row = frame_row(state, frame_id)
    row["captured_at"] = row["captured_at"].isoformat() if row["captured_at"] else None
    row["labels"] = labels_of_frames(state.db, [frame_id])[frame_id]
    row["thumbnail_url"] = thumbnail_url(frame_id)
    row["image_url"] = image_url(frame_id)
    row["video_url"] = video_url(row["source_id"], row["source_kind"])
    return row


def _existing_file(path_text: str, frame_id: int) -> Path:
    path = Path(path_text)
    if not path.is_file():
        raise NotFoundError(f"the image file of frame {frame_id} is missing: {path}")
    return path


@router.get("/{frame_id}/image", response_class=FileResponse, responses=ERRORS)
def get_frame_image(frame_id: int, state: ServerState = Depends(server)) -> FileResponse:
    """The frame's stored image file, as ingested."""
    row = frame_row(state, frame_id)
    path = _existing_file(row["path"], frame_id)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": CACHE_IMMUTABLE})


@router.get("/{frame_id}/thumbnail", response_class=FileResponse, responses=ERRORS)
async def get_frame_thumbnail(frame_id: int, state: ServerState = Depends(server)) -> FileResponse:
    """A JPEG of at most 320 px on its long side, made once and cached under the data directory."""
    row = await run_in_threadpool(frame_row, state, frame_id)
    target = thumbnail_path(state.thumbnail_dir, frame_id, row["sha256"])
    if not target.exists():
        source = _existing_file(row["path"], frame_id)
        await run_in_threadpool(make_thumbnail, source, target)
    return FileResponse(target, media_type="image/jpeg", headers={"Cache-Control": CACHE_IMMUTABLE})
