"""Result rows as the API returns them: frame and source columns, image URLs and the labels each frame carries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sisyphus_db.db.database import Database
from sisyphus_db.label.labels import labels_of_frames
from sisyphus_db.search.runs import SearchHit


def thumbnail_url(frame_id: int) -> str:
    return f"/api/frames/{frame_id}/thumbnail"


def image_url(frame_id: int) -> str:
    return f"/api/frames/{frame_id}/image"


def video_url(source_id: int, kind: str) -> str | None:
    return f"/api/sources/{source_id}/video" if kind == "video" else None


def result_rows(db: Database, hits: Sequence[SearchHit], scores: Iterable[float | None] | None = None
                ) -> list[dict[str, Any]]:
    labels = labels_of_frames(db, [hit.frame_id for hit in hits])
    rows: list[dict[str, Any]] = []
    for hit, score in zip(hits, scores if scores is not None else [None] * len(hits), strict=True):
        rows.append({
            "rank": hit.rank, "frame_id": hit.frame_id, "distance": hit.distance, "path": hit.path,
            "source_id": hit.source_id, "source_uri": hit.source_uri, "source_kind": hit.source_kind,
            "pts_seconds": hit.pts_seconds,
            "frame_index": hit.frame_index, "width": hit.width, "height": hit.height,
            "thumbnail_url": thumbnail_url(hit.frame_id), "image_url": image_url(hit.frame_id),
            "labels": labels.get(hit.frame_id, []), "score": score,
        })
    return rows
