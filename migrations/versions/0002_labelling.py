"""Labelling: label provenance, propagated scores, duplicate groups and clusters, and their views.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib.resources

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEWS = ("label_counts", "label_score_hits", "duplicate_group_sizes", "cluster_sizes")


def _fk(column: str, table: str, kind: type[sa.types.TypeEngine[int]] = sa.BigInteger) -> sa.Column[int]:
    return sa.Column(column, kind(), sa.ForeignKey(f"{table}.id", ondelete="CASCADE"), primary_key=True)


def upgrade() -> None:
    op.execute("UPDATE labels SET origin = 'manual' WHERE origin = 'human'")
    op.alter_column("labels", "origin", server_default="manual")
    op.add_column("labels", sa.Column("rule", sa.Text()))
    op.add_column("labels", sa.Column("score", sa.REAL()))
    op.add_column("labels", sa.Column("created_by", sa.Text(), nullable=False, server_default=sa.text("current_user")))
    op.add_column("labels", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                                      server_default=sa.func.now()))
    op.create_check_constraint("origin", "labels", "origin IN ('manual', 'propagated')")
    op.create_check_constraint("label", "labels", "length(label) BETWEEN 1 AND 200")

    op.create_table(
        "label_scores",
        sa.Column("label", sa.Text(), primary_key=True),
        _fk("model_id", "models", sa.Integer),
        _fk("frame_id", "frames"),
        sa.Column("score", sa.REAL(), nullable=False),
        sa.Column("params", sa.dialects.postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_label_scores_label_score", "label_scores", ["label", "score"])

    op.create_table(
        "duplicate_groups",
        _fk("model_id", "models", sa.Integer),
        _fk("frame_id", "frames"),
        # The group's id is its representative's frame id, so a group is readable in SQL.
        sa.Column("group_id", sa.BigInteger(), nullable=False),
        sa.Column("is_representative", sa.Boolean(), nullable=False),
        sa.Column("distance", sa.REAL(), nullable=False),
        sa.Column("threshold", sa.REAL(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_duplicate_groups_group_id", "duplicate_groups", ["group_id"])

    op.create_table(
        "clusters",
        _fk("model_id", "models", sa.Integer),
        _fk("frame_id", "frames"),
        sa.Column("cluster", sa.Integer(), nullable=False),
        sa.Column("distance", sa.REAL(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_clusters_model_id", "clusters", ["model_id", "cluster"])

    op.execute(importlib.resources.files("sisyphus_db.sql").joinpath("labelling_views.sql").read_text())


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_table("clusters")
    op.drop_table("duplicate_groups")
    op.drop_table("label_scores")
    op.execute("ALTER TABLE labels DROP CONSTRAINT ck_labels_label")
    op.execute("ALTER TABLE labels DROP CONSTRAINT ck_labels_origin")
    for column in ("updated_at", "created_by", "score", "rule"):
        op.drop_column("labels", column)
    op.execute("UPDATE labels SET origin = 'human' WHERE origin = 'manual'")
    op.alter_column("labels", "origin", server_default="human")
