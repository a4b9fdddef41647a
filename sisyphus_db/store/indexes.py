"""The `ann_indexes` registry: which model, factory, file, checksum and watermark an index holds."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from sisyphus_db.db.database import Database
from sisyphus_db.db.models import AnnIndex, Embedding, Model


@dataclass(frozen=True)
class IndexRecord:
    id: int
    model_id: int
    model_name: str
    dim: int
    backend: str
    factory: str
    metric: str
    path: str | None
    sha256: str | None
    ntotal: int
    watermark: int
    params: dict[str, Any]
    recall_at_10: float | None
    build_seconds: float | None
    device: str | None
    state: str
    updated_at: Any
    kind: str = "frames"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model_name, "backend": self.backend, "kind": self.kind, "factory": self.factory, "metric": self.metric,
            "path": self.path, "sha256": self.sha256, "ntotal": self.ntotal, "watermark": self.watermark,
            "params": self.params, "recall_at_10": self.recall_at_10, "build_seconds": self.build_seconds,
            "device": self.device, "state": self.state, "updated_at": str(self.updated_at),
        }


_COLUMNS = (AnnIndex.id, AnnIndex.model_id, Model.name, Model.dim, AnnIndex.backend, AnnIndex.factory,
            AnnIndex.metric, AnnIndex.path, AnnIndex.sha256, AnnIndex.ntotal, AnnIndex.watermark, AnnIndex.params,
            AnnIndex.recall_at_10, AnnIndex.build_seconds, AnnIndex.device, AnnIndex.state, AnnIndex.updated_at,
            AnnIndex.kind)


def _record(row: Any) -> IndexRecord:
    return IndexRecord(*row)


def list_indexes(db: Database, model_id: int | None = None, kind: str | None = None) -> list[IndexRecord]:
    query = sa.select(*_COLUMNS).join(Model, Model.id == AnnIndex.model_id).order_by(AnnIndex.id)
    if model_id is not None:
        query = query.where(AnnIndex.model_id == model_id)
    if kind is not None:
        query = query.where(AnnIndex.kind == kind)
    with db.transaction() as conn:
        return [_record(row) for row in conn.execute(query).all()]


def find_index(db: Database, model_id: int, backend: str, kind: str = "frames") -> IndexRecord | None:
    for record in list_indexes(db, model_id, kind):
        if record.backend == backend:
            return record
    return None


def find_index_and_backlog(db: Database, model_id: int, backend: str,
                           kind: str = "frames") -> tuple[IndexRecord | None, int]:
    """The registry row and how many of the model's vectors are newer than its watermark.

    One statement, built once: a search checks both before every query, and the round trip
    and statement construction are most of the cost.
    """
    # On the driver connection: SQLAlchemy's statement handling cost more than the query.
    with db.copy_connection() as conn:
        row = conn.execute(_with_backlog_sql(), {"model_id": model_id, "backend": backend, "kind": kind}).fetchone()
    if row is None:
        return None, 0
    return _record(row[:-1]), int(row[-1])


@functools.cache
def _with_backlog_sql() -> str:
    return str(_WITH_BACKLOG.compile(dialect=psycopg_dialect()))


_WITH_BACKLOG = (
    sa.select(*_COLUMNS, sa.select(sa.func.count()).select_from(Embedding)
              .where(Embedding.model_id == sa.bindparam("model_id"), Embedding.frame_id > AnnIndex.watermark)
              .scalar_subquery())
    .join(Model, Model.id == AnnIndex.model_id)
    .where(AnnIndex.model_id == sa.bindparam("model_id"), AnnIndex.backend == sa.bindparam("backend"),
           AnnIndex.kind == sa.bindparam("kind"))
)


def save_index(db: Database, *, model_id: int, backend: str, kind: str = "frames", **values: Any) -> IndexRecord:
    """Create or replace the registry row of (model, backend, kind)."""
    values = {**values, "updated_at": sa.func.now()}
    with db.transaction() as conn:
        statement = insert(AnnIndex).values(model_id=model_id, backend=backend, kind=kind, **values)
        statement = statement.on_conflict_do_update(
            index_elements=["model_id", "backend", "kind"], set_={key: statement.excluded[key] for key in values}
        )
        conn.execute(statement)
    record = find_index(db, model_id, backend, kind)
    assert record is not None
    return record


def update_index(db: Database, record_id: int, **values: Any) -> IndexRecord:
    """Change some columns of an existing registry row (e.g. after `index update`).

    Not an upsert: INSERT ... ON CONFLICT checks NOT NULL columns (factory, metric) of the
    proposed row before it sees the conflict, so a partial upsert always fails.
    """
    values = {**values, "updated_at": sa.func.now()}
    with db.transaction() as conn:
        row = conn.execute(sa.update(AnnIndex).where(AnnIndex.id == record_id).values(**values)
                           .returning(AnnIndex.model_id, AnnIndex.backend, AnnIndex.kind)).one()
    record = find_index(db, row.model_id, row.backend, row.kind)
    assert record is not None
    return record


def delete_index(db: Database, record_id: int) -> None:
    with db.transaction() as conn:
        conn.execute(sa.delete(AnnIndex).where(AnnIndex.id == record_id))
