"""Alembic environment: runs on the connection sisyphus hands over, or on its settings."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from sisyphus_db.db.models import Base


def run_migrations(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    # Plain `alembic upgrade head`: the same settings as the CLI (SISYPHUS_* variables).
    from sisyphus_db.config import Settings
    from sisyphus_db.db.database import open_database

    db = open_database(Settings.from_env(), require_schema=False)
    with db.engine.begin() as conn:
        run_migrations(conn)


if context.is_offline_mode():
    raise SystemExit("sisyphus migrations run online only: use `sisyphus db upgrade`")
main()
