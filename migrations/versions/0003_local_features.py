"""Local features: region vectors, bag-of-words vocabularies and assignment maps, index kinds.

- `regions`: R-MAC-style region vectors of a frame's feature map, with their pixel box.
- `bow_vocabularies`: a visual vocabulary (k-means centroids in a registered .npz file).
- `bow_frames`: each frame's word assignment map (grid_h x grid_w word ids, row-major).
- `ann_indexes.kind`: what an index holds (frames, regions, segments, bow, ...); the
  registry is unique per (model, backend, kind). The bow inverted file is a sidecar
  registered with backend 'invfile'.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import HALFVEC
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _fk(column: str, table: str, kind: type[sa.types.TypeEngine[int]] = sa.BigInteger,
        primary_key: bool = False) -> sa.Column[int]:
    return sa.Column(column, kind(), sa.ForeignKey(f"{table}.id", ondelete="CASCADE"), nullable=False,
                     primary_key=primary_key)


def upgrade() -> None:
    op.create_table(
        "regions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        _fk("frame_id", "frames"),
        _fk("model_id", "models", sa.Integer),
        sa.Column("scale", sa.SmallInteger(), nullable=False),
        sa.Column("x0", sa.Integer(), nullable=False),
        sa.Column("y0", sa.Integer(), nullable=False),
        sa.Column("x1", sa.Integer(), nullable=False),
        sa.Column("y1", sa.Integer(), nullable=False),
        sa.Column("vec", HALFVEC(), nullable=False),
        sa.UniqueConstraint("model_id", "frame_id", "x0", "y0", "x1", "y1",
                            name="uq_regions_model_id_frame_id_x0_y0_x1_y1"),
        sa.CheckConstraint("x1 > x0 AND y1 > y0 AND x0 >= 0 AND y0 >= 0", name="box"),
        sa.CheckConstraint("scale >= 1", name="scale"),
    )
    op.create_index("ix_regions_model_id", "regions", ["model_id", "frame_id"])

    op.create_table(
        "bow_vocabularies",
        sa.Column("id", sa.Integer(), sa.Identity(always=True), primary_key=True),
        _fk("model_id", "models", sa.Integer),
        sa.Column("layer", sa.Text(), nullable=False),
        sa.Column("words", sa.Integer(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("frames_sampled", sa.Integer(), nullable=False),
        sa.Column("descriptors", sa.BigInteger(), nullable=False),
        sa.Column("build_seconds", sa.Double()),
        sa.Column("params", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("model_id", "layer", name="uq_bow_vocabularies_model_id_layer"),
        sa.CheckConstraint("words >= 1", name="words"),
    )

    op.create_table(
        "bow_frames",
        _fk("vocabulary_id", "bow_vocabularies", sa.Integer, primary_key=True),
        _fk("frame_id", "frames", primary_key=True),
        sa.Column("grid_h", sa.SmallInteger(), nullable=False),
        sa.Column("grid_w", sa.SmallInteger(), nullable=False),
        sa.Column("words", ARRAY(sa.Integer()), nullable=False),
        sa.CheckConstraint("cardinality(words) = grid_h * grid_w", name="grid"),
    )

    op.add_column("ann_indexes", sa.Column("kind", sa.Text(), nullable=False, server_default="frames"))
    op.execute("ALTER TABLE ann_indexes DROP CONSTRAINT uq_ann_indexes_model_id_backend")
    op.create_unique_constraint("uq_ann_indexes_model_id_backend_kind", "ann_indexes",
                                ["model_id", "backend", "kind"])
    # 0001 named it twice over through the naming convention.
    op.execute("ALTER TABLE ann_indexes DROP CONSTRAINT ck_ann_indexes_ck_ann_indexes_backend")
    op.create_check_constraint("backend", "ann_indexes", "backend IN ('faiss', 'pgvector', 'invfile')")


def downgrade() -> None:
    op.execute("DELETE FROM ann_indexes WHERE kind <> 'frames' OR backend = 'invfile'")
    op.execute("ALTER TABLE ann_indexes DROP CONSTRAINT ck_ann_indexes_backend")
    op.execute("ALTER TABLE ann_indexes ADD CONSTRAINT ck_ann_indexes_ck_ann_indexes_backend "
               "CHECK (backend IN ('faiss', 'pgvector'))")
    op.execute("ALTER TABLE ann_indexes DROP CONSTRAINT uq_ann_indexes_model_id_backend_kind")
    op.create_unique_constraint("uq_ann_indexes_model_id_backend", "ann_indexes", ["model_id", "backend"])
    op.drop_column("ann_indexes", "kind")
    op.drop_table("bow_frames")
    op.drop_table("bow_vocabularies")
    op.drop_table("regions")
