"""Schema v1: sources, frames, models, embeddings, indexes, searches, labels, errors, views.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import importlib.resources

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import HALFVEC
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

VIEWS = ("frame_catalog", "search_hits")


def _id(kind: type[sa.types.TypeEngine[int]] = sa.BigInteger) -> sa.Column[int]:
    return sa.Column("id", kind(), sa.Identity(always=True), primary_key=True)


def _jsonb(name: str) -> sa.Column[object]:
    return sa.Column(name, JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))


def _created(name: str = "created_at") -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def _fk(column: str, table: str, *, ondelete: str, kind: type[sa.types.TypeEngine[int]] = sa.BigInteger,
        nullable: bool = False, primary_key: bool = False) -> sa.Column[int]:
    return sa.Column(column, kind(), sa.ForeignKey(f"{table}.id", ondelete=ondelete), nullable=nullable,
                     primary_key=primary_key)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "sources",
        _id(),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False, server_default="ingesting"),
        sa.Column("fingerprint", sa.Text()),
        sa.Column("duration_seconds", sa.Double()),
        sa.Column("fps", sa.Double()),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("codec", sa.Text()),
        sa.Column("keyframe_method", sa.Text()),
        _jsonb("tags"),
        _jsonb("metadata"),
        _created(),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("uri", name="uq_sources_uri"),
        sa.CheckConstraint("kind IN ('video', 'image', 'folder')", name="ck_sources_kind"),
        sa.CheckConstraint("state IN ('ingesting', 'complete')", name="ck_sources_state"),
    )

    op.create_table(
        "frames",
        _id(),
        _fk("source_id", "sources", ondelete="CASCADE"),
        sa.Column("frame_index", sa.Integer(), nullable=False),
        sa.Column("pts_seconds", sa.Double(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True)),
        sa.Column("keyframe_method", sa.Text(), nullable=False),
        sa.Column("keyframe_score", sa.REAL()),
        _jsonb("metadata"),
        _created(),
        sa.UniqueConstraint("source_id", "frame_index", "path", name="uq_frames_source_id_frame_index_path"),
        sa.CheckConstraint("width > 0 AND height > 0", name="ck_frames_positive_size"),
        sa.CheckConstraint("frame_index >= 0", name="ck_frames_frame_index"),
        sa.CheckConstraint("pts_seconds >= 0", name="ck_frames_pts_seconds"),
        sa.CheckConstraint(
            "keyframe_method IN ('image', 'scene', 'similarity', 'iframe', 'fps')", name="ck_frames_keyframe_method"
        ),
        sa.CheckConstraint("length(sha256) = 64", name="ck_frames_sha256"),
    )
    op.create_index("ix_frames_sha256", "frames", ["sha256"])

    op.create_table(
        "models",
        _id(sa.Integer),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("weights_sha256", sa.Text(), nullable=False),
        sa.Column("pooling", sa.Text()),
        _jsonb("preprocessing"),
        _created(),
        sa.UniqueConstraint("name", name="uq_models_name"),
        sa.CheckConstraint("dim > 0 AND dim <= 4000", name="ck_models_dim"),
    )

    op.create_table(
        "embeddings",
        _fk("frame_id", "frames", ondelete="CASCADE", primary_key=True),
        _fk("model_id", "models", ondelete="CASCADE", kind=sa.Integer, primary_key=True),
        sa.Column("vec", HALFVEC(), nullable=False),
    )
    op.create_index("ix_embeddings_model_id", "embeddings", ["model_id", "frame_id"])

    op.create_table(
        "ann_indexes",
        _id(sa.Integer),
        _fk("model_id", "models", ondelete="CASCADE", kind=sa.Integer),
        sa.Column("backend", sa.Text(), nullable=False),
        sa.Column("factory", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("path", sa.Text()),
        sa.Column("sha256", sa.Text()),
        sa.Column("ntotal", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("watermark", sa.BigInteger(), nullable=False, server_default="0"),
        _jsonb("params"),
        sa.Column("recall_at_10", sa.Double()),
        sa.Column("build_seconds", sa.Double()),
        sa.Column("device", sa.Text()),
        sa.Column("state", sa.Text(), nullable=False, server_default="building"),
        _created(),
        _created("updated_at"),
        sa.UniqueConstraint("model_id", "backend", name="uq_ann_indexes_model_id_backend"),
        sa.CheckConstraint("backend IN ('faiss', 'pgvector')", name="ck_ann_indexes_backend"),
        sa.CheckConstraint("state IN ('building', 'ready', 'failed')", name="ck_ann_indexes_state"),
        sa.CheckConstraint("ntotal >= 0", name="ck_ann_indexes_ntotal"),
    )

    op.create_table(
        "search_runs",
        _id(),
        sa.Column("name", sa.Text()),
        _fk("model_id", "models", ondelete="SET NULL", kind=sa.Integer, nullable=True),
        _jsonb("query"),
        sa.Column("filter", sa.Text()),
        sa.Column("backend", sa.Text(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        _jsonb("params"),
        sa.Column("elapsed_ms", sa.Double()),
        _created(),
    )

    op.create_table(
        "search_results",
        _fk("run_id", "search_runs", ondelete="CASCADE", primary_key=True),
        sa.Column("rank", sa.Integer(), primary_key=True),
        _fk("frame_id", "frames", ondelete="CASCADE"),
        sa.Column("distance", sa.REAL(), nullable=False),
        sa.CheckConstraint("rank >= 1", name="ck_search_results_rank"),
    )
    op.create_index("ix_search_results_frame_id", "search_results", ["frame_id"])

    op.create_table(
        "labels",
        _id(),
        _fk("frame_id", "frames", ondelete="CASCADE"),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("positive", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("origin", sa.Text(), nullable=False, server_default="human"),
        _fk("run_id", "search_runs", ondelete="SET NULL", nullable=True),
        _created(),
        sa.UniqueConstraint("frame_id", "label", name="uq_labels_frame_id_label"),
    )
    op.create_index("ix_labels_label", "labels", ["label"])

    op.create_table(
        "ingest_errors",
        _id(),
        sa.Column("uri", sa.Text(), nullable=False),
        _fk("source_id", "sources", ondelete="SET NULL", nullable=True),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _created(),
    )

    op.create_table(
        "knn_edges",
        _fk("model_id", "models", ondelete="CASCADE", kind=sa.Integer, primary_key=True),
        _fk("frame_id", "frames", ondelete="CASCADE", primary_key=True),
        sa.Column("rank", sa.Integer(), primary_key=True),
        _fk("neighbor_id", "frames", ondelete="CASCADE"),
        sa.Column("distance", sa.REAL(), nullable=False),
        sa.CheckConstraint("rank >= 1", name="ck_knn_edges_rank"),
    )
    op.create_index("ix_knn_edges_neighbor_id", "knn_edges", ["neighbor_id"])

    op.create_table(
        "eval_runs",
        _id(),
        sa.Column("kind", sa.Text(), nullable=False),
        _jsonb("params"),
        _created(),
    )
    op.create_table(
        "eval_metrics",
        _id(),
        _fk("run_id", "eval_runs", ondelete="CASCADE"),
        sa.Column("backend", sa.Text(), nullable=False),
        sa.Column("factory", sa.Text()),
        sa.Column("subset", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
    )
    op.create_index("ix_eval_metrics_run_id", "eval_metrics", ["run_id"])

    op.execute(importlib.resources.files("sisyphus_db.sql").joinpath("views.sql").read_text())


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for table in (
        "eval_metrics",
        "eval_runs",
        "knn_edges",
        "ingest_errors",
        "labels",
        "search_results",
        "search_runs",
        "ann_indexes",
        "embeddings",
        "models",
        "frames",
        "sources",
    ):
        op.drop_table(table)
