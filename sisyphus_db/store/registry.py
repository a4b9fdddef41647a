"""Rows that describe things: embedding models and sources, and recorded ingest errors."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from sisyphus_db.db.database import Database
from sisyphus_db.db.models import IngestError, Model, Source
from sisyphus_db.errors import ModelError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredModel:
    id: int
    name: str
    dim: int


def register_model(db: Database, *, name: str, dim: int, weights_sha256: str, pooling: str | None,
                   preprocessing: dict[str, Any]) -> StoredModel:
    """The model's row, created on first use; refuses a name whose weights or dimension changed.

    Vectors of one model name must be comparable, so new weights need a new name.
    """
    with db.transaction() as conn:
        conn.execute(
            insert(Model)
            .values(name=name, dim=dim, weights_sha256=weights_sha256, pooling=pooling, preprocessing=preprocessing)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = conn.execute(sa.select(Model.id, Model.dim, Model.weights_sha256).where(Model.name == name)).one()
    if row.dim != dim or row.weights_sha256 != weights_sha256:
        raise ModelError(
            f"model {name!r} is registered with other weights or dimension "
            f"(sha256 {row.weights_sha256[:12]}, {row.dim}-d; now {weights_sha256[:12]}, {dim}-d): "
            "its stored vectors would not be comparable"
        )
    return StoredModel(id=row.id, name=name, dim=dim)


def find_model(db: Database, name: str) -> StoredModel | None:
    with db.transaction() as conn:
        row = conn.execute(sa.select(Model.id, Model.dim).where(Model.name == name)).one_or_none()
    return None if row is None else StoredModel(id=row.id, name=name, dim=row.dim)


def stored_models(db: Database) -> list[StoredModel]:
    with db.transaction() as conn:
        rows = conn.execute(sa.select(Model.id, Model.name, Model.dim).order_by(Model.id)).all()
    return [StoredModel(id=r.id, name=r.name, dim=r.dim) for r in rows]


@dataclass(frozen=True)
class StoredSource:
    id: int
    state: str


def upsert_source(db: Database, *, uri: str, kind: str, tags: dict[str, str], **details: Any) -> StoredSource:
    """The source's row, created if new; tags given now are merged into the stored ones."""
    values = {key: value for key, value in details.items() if value is not None}
    with db.transaction() as conn:
        statement = insert(Source).values(uri=uri, kind=kind, tags=tags, **values)
        statement = statement.on_conflict_do_update(
            index_elements=["uri"],
            set_={"tags": Source.tags.op("||")(statement.excluded.tags), **{k: statement.excluded[k] for k in values}},
        ).returning(Source.id, Source.state)
        row = conn.execute(statement).one()
    return StoredSource(id=row.id, state=row.state)


def mark_source_complete(db: Database, source_id: int) -> None:
    with db.transaction() as conn:
        conn.execute(
            sa.update(Source).where(Source.id == source_id).values(state="complete", completed_at=sa.func.now())
        )


def source_is_done(db: Database, source_id: int, model_id: int) -> bool:
    """Complete, and every one of its frames has a vector under this model."""
    with db.transaction() as conn:
        return bool(conn.execute(sa.text(
            "SELECT s.state = 'complete' AND NOT EXISTS ("
            "  SELECT 1 FROM frames f WHERE f.source_id = s.id AND NOT EXISTS ("
            "    SELECT 1 FROM embeddings e WHERE e.frame_id = f.id AND e.model_id = :model))"
            " FROM sources s WHERE s.id = :source"
        ), {"source": source_id, "model": model_id}).scalar())


def stored_frame_keys(db: Database, source_id: int, model_id: int) -> set[tuple[int, str]]:
    """(frame_index, path) of the source's frames that already have a vector under the model."""
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT f.frame_index, f.path FROM frames f JOIN embeddings e ON e.frame_id = f.id "
            "WHERE f.source_id = :source AND e.model_id = :model"
        ), {"source": source_id, "model": model_id}).all()
    return {(row.frame_index, row.path) for row in rows}


def record_ingest_error(db: Database, *, uri: str, stage: str, reason: str, source_id: int | None = None) -> None:
    with db.transaction() as conn:
        conn.execute(sa.insert(IngestError).values(uri=uri, stage=stage, reason=reason, source_id=source_id))


__all__ = [
    "StoredModel",
    "StoredSource",
    "find_model",
    "mark_source_complete",
    "record_ingest_error",
    "register_model",
    "source_is_done",
    "stored_frame_keys",
    "stored_models",
    "upsert_source",
]


def update_source_details(db: Database, source_id: int, **details: Any) -> None:
    values = {key: value for key, value in details.items() if value is not None}
    if values:
        with db.transaction() as conn:
            conn.execute(sa.update(Source).where(Source.id == source_id).values(**values))


def finish_source(db: Database, source_id: int, *, failed: bool) -> bool:
    """Mark the source complete; a failed source that yielded no frame is removed instead,
    so the next run tries it again (its error rows stay). Returns True when kept."""
    with db.transaction() as conn:
        if failed:
            has_frames = conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM frames WHERE source_id = :s)"),
                                      {"s": source_id}).scalar()
            if not has_frames:
                conn.execute(sa.delete(Source).where(Source.id == source_id))
                return False
        conn.execute(
            sa.update(Source).where(Source.id == source_id).values(state="complete", completed_at=sa.func.now())
        )
        return True
