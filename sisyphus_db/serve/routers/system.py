"""GET /healthz (the process is up), /readyz (database reachable, registered indexes loaded), /api/config (for the page)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from sisyphus_db.errors import AnnIndexError
from sisyphus_db.search.engine import BACKENDS, MAX_K
from sisyphus_db.serve.deps import server, user
from sisyphus_db.serve.filters import OPS, fields_help
from sisyphus_db.serve.indexes import NoIndexError
from sisyphus_db.serve.state import ServerState

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (answers without a token)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: ServerState = Depends(server)) -> JSONResponse:
    """200 when the database answers and every faiss index in the registry is loaded; 503 and why otherwise.

    A model with no faiss index registered is listed as not indexed (it is searched with the
    exact or pgvector backend), not a reason to be unready; a registered index whose file is
    missing, corrupt or not ready is.
    """
    try:
        with state.db.transaction() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return JSONResponse({"status": "not ready", "error": f"the database does not answer: {exc}"}, 503)
    indexes: list[dict[str, Any]] = []
    problems: list[str] = []
    not_indexed: list[str] = []
    for model in state.models():
        try:
            loaded = state.index(model)
        except NoIndexError:
            not_indexed.append(model.name)
            indexes.append({"model": model.name, "indexed": False, "loaded": False,
                            "note": "no faiss index: searched with the exact or pgvector backend"})
            continue
        except AnnIndexError as exc:
            problems.append(str(exc))
            indexes.append({"model": model.name, "indexed": True, "loaded": False, "error": str(exc)})
            continue
        indexes.append({"model": model.name, "indexed": True, "loaded": True, "ntotal": int(loaded.index.ntotal),
                        "sha256": loaded.record.sha256, "watermark": loaded.record.watermark,
                        "pending_frames": loaded.newer})
    if not state.models():
        problems.append("the database holds no vectors yet: run `sisyphus ingest`")
    body: dict[str, Any] = {"status": "ready" if not problems else "not ready", "database": "ok",
                            "indexes": indexes, "not_indexed": not_indexed}
    if problems:
        body["error"] = problems[0]
    return JSONResponse(body, 200 if not problems else 503)


@router.get("/api/config", tags=["config"])
def config(state: ServerState = Depends(server), who: str = Depends(user)) -> dict[str, Any]:
    """What the page needs to build its controls: defaults, models, labels, filterable fields."""
    from sisyphus_db.label.labels import list_labels

    models = []
    for model in state.models():
        entry: dict[str, Any] = {"name": model.name, "dim": model.dim, "can_embed_images": state.can_embed(model),
                                 "faiss_index": None}
        try:
            loaded = state.index(model)
            entry["faiss_index"] = {"factory": loaded.record.factory, "ntotal": int(loaded.index.ntotal),
                                    "params": loaded.record.params}
        except AnnIndexError:
            pass
        models.append(entry)
    with state.db.transaction() as conn:
        tag_keys = conn.execute(sa.text(
            "SELECT DISTINCT jsonb_object_keys(tags) AS key FROM sources ORDER BY key LIMIT 200")).scalars().all()
    return {
        "user": who,
        "auth": state.config.tokens is not None,
        "defaults": {"k": 10, "backend": "faiss", "per_source": None, "model": state.default_model_name()},
        "max_k": MAX_K,
        "backends": list(BACKENDS),
        "models": models,
        "labels": [summary.label for summary in list_labels(state.db)],
        "filters": {"ops": list(OPS), "fields": fields_help(), "tag_keys": list(tag_keys)},
        "max_upload_mb": state.config.max_upload_mb,
    }
