"""Counts of what the database holds, for `db status`."""

from __future__ import annotations

import sqlalchemy as sa

from sisyphus_db.db.database import Database

COUNTED_TABLES = ("sources", "frames", "embeddings", "models", "ann_indexes", "search_runs", "labels", "ingest_errors")


def database_counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in COUNTED_TABLES}


def refresh_planner_statistics(db: Database) -> None:
    """ANALYZE the tables an ingest fills, so filters and joins get sane plans right away
    instead of after autovacuum gets round to them."""
    with db.transaction() as conn:
        conn.execute(sa.text("ANALYZE sources, frames, embeddings"))
