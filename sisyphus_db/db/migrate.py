"""Schema migrations through Alembic, run from the installed package (no alembic.ini needed)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from sisyphus_db.db.database import Database
from sisyphus_db.errors import SchemaError


def migrations_dir() -> Path:
    return Path(str(importlib.resources.files("sisyphus_db.migrations")))


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    with db.engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(db: Database, revision: str) -> None:
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if revision not in known | {"base"} and not revision.startswith("-"):
        raise SchemaError(f"unknown revision {revision!r}: expected base, -N or one of {', '.join(sorted(known))}")
    with db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def check_schema(db: Database) -> None:
    """Refuse a database whose schema is missing, older or newer than this code."""
    current = current_revision(db)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaError("the database has no sisyphus schema: run `sisyphus db upgrade`")
    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise SchemaError(
            f"the database schema (revision {current}) is newer than this sisyphus (revision {head}): "
            "upgrade sisyphus-db"
        )
    raise SchemaError(
        f"the database schema is at revision {current} but this sisyphus needs {head}: run `sisyphus db upgrade`"
    )
