"""POST /api/search (frame, vector or class name) and POST /api/search/image (an uploaded image).

Both go through the search planner (sisyphus_db.search.engine) with the server's loaded
index, and store the run as the CLI does. The handlers are plain functions: FastAPI runs
them in its thread pool, so searches run in parallel and never block the event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, Depends, File, Form, UploadFile

from sisyphus_db.errors import AnnIndexError, InputError
from sisyphus_db.search.engine import BACKENDS, SearchRequest, search, validate_request
from sisyphus_db.search.queries import Query, query_from_class, query_from_frame, query_from_rgb
from sisyphus_db.serve.deps import server
from sisyphus_db.serve.errors import NotFoundError
from sisyphus_db.serve.filters import compile_filters, parse_filters_json
from sisyphus_db.serve.indexes import LoadedIndex
from sisyphus_db.serve.results import result_rows
from sisyphus_db.serve.schemas import ErrorResponse, SearchBody, SearchResponse
from sisyphus_db.serve.state import ServerState
from sisyphus_db.serve.uploads import decode_upload
from sisyphus_db.store.registry import StoredModel

router = APIRouter(prefix="/api", tags=["search"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 422)}


def run_search(state: ServerState, model: StoredModel, query: Query, *, started: float, k: int,
               filters: Sequence[Any], per_source: int | None, backend: str, nprobe: int | None = None,
               save: bool = True, name: str | None = None, extra: Sequence[str] = (),
               loaded: LoadedIndex | None = None) -> dict[str, Any]:
    """One search through the planner, answered as the API's SearchResponse."""
    request = SearchRequest(k=k, backend=backend, where=compile_filters(filters, extra=extra), nprobe=nprobe,
                            per_source=per_source, save=save, name=name)
    validate_request(request)
    if loaded is None and backend == "faiss":
        loaded = state.index(model)
    if loaded is not None and nprobe is not None:
        from sisyphus_db.ann.params import check_nprobe

        try:
            check_nprobe(loaded.index, nprobe)
        except AnnIndexError as exc:  # a parameter this index does not have: the request is wrong
            raise InputError(str(exc)) from None
    outcome = search(state.db, model, query, request,
                     loaded=(loaded.record, loaded.index) if loaded is not None else None,
                     refine=loaded.store if loaded is not None else None)
    results = result_rows(state.db, outcome.hits)
    warnings = [*outcome.warnings, *(loaded.warnings if loaded is not None else [])]
    return {"run_id": outcome.run_id, "elapsed_ms": round((time.perf_counter() - started) * 1000.0, 3),
            "search_ms": round(outcome.elapsed_ms, 3), "backend": outcome.backend, "model": model.name,
            "total": len(results), "warnings": warnings, "results": results}


def _vector_query(values: list[float], model: StoredModel) -> Query:
    if len(values) != model.dim:
        raise InputError(f"expected a {model.dim}-d vector for {model.name}, got {len(values)}-d")
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0.0:
        raise InputError("the vector has no direction (zero, NaN or infinite values)")
    return Query((vector / norm).astype(np.float32), {"kind": "vector", "source": "api"})


def _frame_query(state: ServerState, model: StoredModel, frame_id: int, loaded: LoadedIndex | None) -> Query:
    """A stored frame's vector: from the index's refine store in memory when it holds the frame
    (the same float16 values as the table's halfvec), else from PostgreSQL.

    Only for a frame `_stored_frame` found in the table: the refine store keeps the vectors of
    frames deleted since the last `index update`, and those must not be queries any more.
    """
    if loaded is not None and loaded.store is not None:
        ids, vectors = loaded.store.vectors_of([frame_id])
        if ids.size:
            vector = vectors[0] / max(float(np.linalg.norm(vectors[0])), 1e-12)
            return Query(vector.astype(np.float32), {"kind": "frame", "frame_id": frame_id}, frame_id=frame_id)
    return query_from_frame(state.db, frame_id, model)


def _stored_frame(state: ServerState, model: StoredModel, frame_id: int) -> int:
    """The frame's source id; PostgreSQL decides whether the frame exists (404) and has a vector (400)."""
    with state.db.transaction() as conn:
        row = conn.execute(sa.text(
            "SELECT f.source_id, EXISTS (SELECT 1 FROM embeddings e WHERE e.frame_id = f.id AND e.model_id = :m) "
            "FROM frames f WHERE f.id = :f"), {"f": frame_id, "m": model.id}).first()
    if row is None:
        raise NotFoundError(f"frame {frame_id} does not exist")
    if not row[1]:
        raise InputError(f"frame {frame_id} has no {model.name} vector")
    return int(row[0])


@router.post("/search", response_model=SearchResponse, responses=ERRORS)
def search_json(body: SearchBody, state: ServerState = Depends(server)) -> dict[str, Any]:
    """Search by a stored frame (`frame_id`), a vector (`vector`) or an ImageNet class name (`text`)."""
    started = time.perf_counter()
    given = [key for key in ("frame_id", "vector", "text") if getattr(body, key) is not None]
    if len(given) != 1:
        raise InputError("give exactly one of frame_id, vector and text" +
                         (f" (got {', '.join(given)})" if given else ""))
    if body.exclude_source_of_query and body.frame_id is None:
        raise InputError("exclude_source_of_query needs a frame_id query")
    model = state.model(body.model)
    loaded = state.index(model) if body.backend == "faiss" else None
    extra: list[str] = []
    if body.frame_id is not None:
        source_id = _stored_frame(state, model, body.frame_id)
        if body.exclude_source_of_query:
            # An integer read from the database, not user text.
            extra.append(f"frames.source_id <> {source_id:d}")
        query = _frame_query(state, model, body.frame_id, loaded)
    elif body.vector is not None:
        query = _vector_query(body.vector, model)
    else:
        assert body.text is not None
        query = query_from_class(body.text, model)
    return run_search(state, model, query, started=started, k=body.k, filters=body.filters,
                      per_source=body.per_source, backend=body.backend, nprobe=body.nprobe, save=body.save,
                      name=body.name, extra=extra, loaded=loaded)


def _optional_int(name: str, text: str | None, default: int | None) -> int | None:
    if text is None or not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{name} must be an integer, got {text.strip()[:40]!r}") from None


@router.post("/search/image", response_model=SearchResponse, responses=ERRORS)
def search_image(
    file: UploadFile = File(description="the query image (JPEG, PNG, ...)"),
    k: str | None = Form(default=None, description="number of results (default 10)"),
    filters: str | None = Form(default=None, description="a JSON list of filter conditions"),
    per_source: str | None = Form(default=None, description="at most this many results per source"),
    backend: str = Form(default="faiss", description="faiss, pgvector or exact"),
    model: str | None = Form(default=None),
    nprobe: str | None = Form(default=None),
    state: ServerState = Depends(server),
) -> dict[str, Any]:
    """Search with an uploaded image, embedded by the model the index was built with."""
    started = time.perf_counter()
    count = _optional_int("k", k, 10)
    assert count is not None
    conditions = parse_filters_json(filters)
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    cap = _optional_int("per_source", per_source, None)
    probes = _optional_int("nprobe", nprobe, None)
    validate_request(SearchRequest(k=count, backend=backend, per_source=cap, nprobe=probes))
    stored = state.model(model or None)
    compile_filters(conditions)  # a bad filter fails before the image is decoded and embedded
    limit = state.config.max_upload_bytes
    data = file.file.read(limit + 1)
    image = decode_upload(data, limit)
    embedder = state.batched_embedder(stored)
    description = {"kind": "image", "upload": (file.filename or "")[:200], "sha256": image.sha256, "bytes": len(data)}
    query = query_from_rgb([image.rgb], stored, embedder, description)
    return run_search(state, stored, query, started=started, k=count, filters=conditions, per_source=cap,
                      backend=backend, nprobe=probes)
