"""Duplicate groups per method: embedding neighbours and perceptual hashes keep separate groups.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib.resources

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS duplicate_group_sizes")
    op.add_column("duplicate_groups", sa.Column("method", sa.Text(), nullable=False, server_default="embedding"))
    op.execute("ALTER TABLE duplicate_groups DROP CONSTRAINT pk_duplicate_groups")
    op.execute("ALTER TABLE duplicate_groups ADD CONSTRAINT pk_duplicate_groups PRIMARY KEY (model_id, method, frame_id)")
    op.execute(importlib.resources.files("sisyphus_db.sql").joinpath("duplicate_views.sql").read_text())


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS duplicate_group_sizes")
    op.execute("DELETE FROM duplicate_groups WHERE method <> 'embedding'")
    op.execute("ALTER TABLE duplicate_groups DROP CONSTRAINT pk_duplicate_groups")
    op.execute("ALTER TABLE duplicate_groups ADD CONSTRAINT pk_duplicate_groups PRIMARY KEY (model_id, frame_id)")
    op.drop_column("duplicate_groups", "method")
    # The view as migration 0002 made it.
    sql = importlib.resources.files("sisyphus_db.sql").joinpath("labelling_views.sql").read_text()
    op.execute(sql[sql.index("-- Near-duplicate groups"):sql.index("-- k-means clusters")])
