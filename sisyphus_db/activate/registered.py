"""The registered faiss sidecar of a model as the activation target (read through search/indexing)."""

from __future__ import annotations

from typing import Any

from sisyphus_db.db.database import Database


def registered_index(db: Database, model_name: str) -> tuple[Any, dict[str, Any]]:
    """(the model's faiss index, what the manifest says about it); one clear error when there is none."""
    from sisyphus_db.search.indexing import (
        load_faiss_index,
        require_faiss_record,
        resolve_model,
    )

    model = resolve_model(db, model_name)
    record = require_faiss_record(db, model)
    index = load_faiss_index(record)
    return index, {"kind": "registered", "factory": record.factory, "index_id": record.id,
                   "sha256": record.sha256, "ntotal": record.ntotal, "model": model.name}
