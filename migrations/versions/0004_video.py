"""Video level: segment vectors, perceptual frame hashes and per-second audio vectors.

- `segments`: a window of a video pooled from its frames' vectors under a model
  (`sisyphus segments build`); unique per (source, model, start, window) so a build run
  again adds nothing. Their faiss sidecar is registered in ann_indexes with kind 'segments'.
- `frame_hashes`: each frame's 64-bit pHash and wavelet hash as pgvector `bit(64)`, with
  HNSW Hamming indexes (`bit_hamming_ops`) for `search --method phash`.
- `audio_segments`: per-second sound vectors of a video's audio track (`sisyphus audio build`),
  with the method that made them (log-mel baseline or VGGish).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import BIT, HALFVEC

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _fk(column: str, table: str, kind: type[sa.types.TypeEngine[int]] = sa.BigInteger,
        primary_key: bool = False) -> sa.Column[int]:
    return sa.Column(column, kind(), sa.ForeignKey(f"{table}.id", ondelete="CASCADE"), nullable=False,
                     primary_key=primary_key)


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        _fk("source_id", "sources"),
        _fk("model_id", "models", sa.Integer),
        sa.Column("start_seconds", sa.Double(), nullable=False),
        sa.Column("end_seconds", sa.Double(), nullable=False),
        sa.Column("window_seconds", sa.Double(), nullable=False),
        sa.Column("stride_seconds", sa.Double(), nullable=False),
        sa.Column("frame_count", sa.Integer(), nullable=False),
        sa.Column("vec", HALFVEC(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("source_id", "model_id", "start_seconds", "window_seconds",
                            name="uq_segments_source_id_model_id_start_seconds_window_seconds"),
        sa.CheckConstraint("end_seconds > start_seconds AND start_seconds >= 0", name="range"),
        sa.CheckConstraint("window_seconds > 0 AND stride_seconds > 0", name="window"),
        sa.CheckConstraint("frame_count >= 1", name="frame_count"),
    )
    op.create_index("ix_segments_model_id", "segments", ["model_id", "source_id"])

    op.create_table(
        "frame_hashes",
        _fk("frame_id", "frames", primary_key=True),
        sa.Column("phash", BIT(64), nullable=False),
        sa.Column("whash", BIT(64), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # pgvector's HNSW takes bit columns with Hamming distance (`<~>`).
    op.create_index("ix_frame_hashes_phash_hnsw", "frame_hashes", ["phash"], postgresql_using="hnsw",
                    postgresql_ops={"phash": "bit_hamming_ops"})
    op.create_index("ix_frame_hashes_whash_hnsw", "frame_hashes", ["whash"], postgresql_using="hnsw",
                    postgresql_ops={"whash": "bit_hamming_ops"})

    op.create_table(
        "audio_segments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        _fk("source_id", "sources"),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("start_seconds", sa.Double(), nullable=False),
        sa.Column("end_seconds", sa.Double(), nullable=False),
        sa.Column("vec", HALFVEC(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("source_id", "method", "start_seconds",
                            name="uq_audio_segments_source_id_method_start_seconds"),
        sa.CheckConstraint("end_seconds > start_seconds AND start_seconds >= 0", name="range"),
    )
    op.create_index("ix_audio_segments_method", "audio_segments", ["method", "source_id"])


def downgrade() -> None:
    op.execute("DELETE FROM ann_indexes WHERE kind = 'segments'")
    op.drop_table("audio_segments")
    op.drop_table("frame_hashes")
    op.drop_table("segments")
