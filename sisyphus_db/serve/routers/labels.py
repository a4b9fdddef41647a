"""The label endpoints: the same library calls as `sisyphus label ...`, so a label set on the page
and one set in a terminal are the same row; `created_by` is the token's name (or the OS user)."""

from __future__ import annotations

import importlib
import time
from typing import Any

from fastapi import APIRouter, Depends

from sisyphus_db.errors import AnnIndexError
from sisyphus_db.label.labels import (
    LabelError,
    add_labels,
    check_label_name,
    list_labels,
    remove_labels,
    require_label,
    show_label,
)
from sisyphus_db.serve.deps import server, user
from sisyphus_db.serve.errors import NotFoundError, UnavailableError
from sisyphus_db.serve.filters import compile_filters
from sisyphus_db.serve.results import result_rows, thumbnail_url
from sisyphus_db.serve.routers.search import ERRORS
from sisyphus_db.serve.schemas import DiscoverBody, LabelBody
from sisyphus_db.serve.state import ServerState

router = APIRouter(prefix="/api/labels", tags=["labels"])
API_RULE = "api"  # labels.rule of a label set through the API without a search run


def _existing_label(state: ServerState, name: str) -> str:
    name = check_label_name(name)  # a malformed name stays a 400
    try:
        return require_label(state.db, name)
    except LabelError as exc:
        raise NotFoundError(str(exc)) from None


@router.post("", responses=ERRORS)
def post_labels(body: LabelBody, state: ServerState = Depends(server), who: str = Depends(user)) -> dict[str, Any]:
    """Label frames positive or negative (again: the row is updated); unknown frames or runs change nothing."""
    change = add_labels(state.durable_db, body.name, body.frame_ids, positive=body.positive, run_id=body.run_id,
                        rule=None if body.run_id is not None else API_RULE, created_by=who)
    return {**change.to_json(), "positive": body.positive, "created_by": who}


@router.get("", responses=ERRORS)
def get_labels(state: ServerState = Depends(server)) -> dict[str, Any]:
    """Every label with its counts."""
    return {"labels": [summary.to_json() for summary in list_labels(state.db)]}


@router.get("/{name}", responses=ERRORS)
def get_label(name: str, state: ServerState = Depends(server)) -> dict[str, Any]:
    """One label: counts, its positive and negative frames (with thumbnails) and its sources."""
    detail = show_label(state.db, _existing_label(state, name)).to_json()
    for key in ("positive_frames", "negative_frames"):
        for frame in detail[key]:
            frame["thumbnail_url"] = thumbnail_url(frame["frame_id"])
    return detail


@router.delete("/{name}/frames/{frame_id}", responses=ERRORS)
def delete_label(name: str, frame_id: int, state: ServerState = Depends(server)) -> dict[str, Any]:
    """Take the label off one frame."""
    label = _existing_label(state, name)
    try:
        removed = remove_labels(state.durable_db, label, [frame_id])
    except LabelError as exc:
        raise NotFoundError(str(exc)) from None
    return {"label": label, "frame_id": frame_id, "removed": removed}


@router.post("/{name}/discover", responses=ERRORS)
def discover_more(name: str, body: DiscoverBody, state: ServerState = Depends(server)) -> dict[str, Any]:
    """More like these: the next frames to review for the label, stored as a search run."""
    started = time.perf_counter()
    try:
        discover = importlib.import_module("sisyphus_db.label.discover").discover
    except (ImportError, AttributeError):
        raise UnavailableError("discover is not available in this installation") from None
    label = _existing_label(state, name)
    model = state.model(body.model)
    where = compile_filters(body.filters)
    try:
        loaded = state.index(model)
    except AnnIndexError:  # no faiss index: discover searches exactly
        loaded = None
    outcome = discover(state.db, model, label, k=body.k, per_source=body.per_source, where=where,
                       method=body.method, loaded=(loaded.record, loaded.index) if loaded is not None else None,
                       refine=loaded.store if loaded is not None else None)
    document = outcome.to_json()
    document["results"] = result_rows(state.db, outcome.hits, outcome.scores)
    document["elapsed_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
    document["total"] = len(document["results"])
    document["model"] = model.name
    return document
