"""Embeddings partitioned by model: one list partition per model, created when the model is registered.

Each model's vectors, indexes and vacuum are then separate, and a search or join on one
model prunes to its partition. A trigger on `models` creates the partition, so every way
of registering a model (ingest, import-embeddings, descriptor models) gets one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CREATE_PARTITION_FUNCTION = """
CREATE OR REPLACE FUNCTION sisyphus_create_embedding_partition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF embeddings FOR VALUES IN (%s)',
                   'embeddings_m' || NEW.id, NEW.id);
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.execute("ALTER TABLE embeddings RENAME TO embeddings_unpartitioned")
    op.execute("ALTER TABLE embeddings_unpartitioned RENAME CONSTRAINT pk_embeddings TO pk_embeddings_unpartitioned")
    op.execute("ALTER INDEX ix_embeddings_model_id RENAME TO ix_embeddings_unpartitioned_model_id")
    op.execute("""
        CREATE TABLE embeddings (
            frame_id bigint NOT NULL,
            model_id integer NOT NULL,
            vec halfvec NOT NULL,
            CONSTRAINT pk_embeddings PRIMARY KEY (frame_id, model_id),
            CONSTRAINT fk_embeddings_frame_id_frames FOREIGN KEY (frame_id) REFERENCES frames (id) ON DELETE CASCADE,
            CONSTRAINT fk_embeddings_model_id_models FOREIGN KEY (model_id) REFERENCES models (id) ON DELETE CASCADE
        ) PARTITION BY LIST (model_id)
    """)
    op.execute("CREATE INDEX ix_embeddings_model_id ON embeddings (model_id, frame_id)")
    op.execute(CREATE_PARTITION_FUNCTION)
    op.execute("DO $$ DECLARE m integer; BEGIN FOR m IN SELECT id FROM models LOOP "
               "EXECUTE format('CREATE TABLE %I PARTITION OF embeddings FOR VALUES IN (%s)', 'embeddings_m' || m, m); "
               "END LOOP; END $$")
    op.execute("INSERT INTO embeddings (frame_id, model_id, vec) SELECT frame_id, model_id, vec FROM embeddings_unpartitioned")
    # Views that read embeddings follow the new table.
    op.execute("DROP TABLE embeddings_unpartitioned CASCADE")
    op.execute("CREATE TRIGGER models_embedding_partition AFTER INSERT ON models "
               "FOR EACH ROW EXECUTE FUNCTION sisyphus_create_embedding_partition()")
    _recreate_views()


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS models_embedding_partition ON models")
    op.execute("DROP FUNCTION IF EXISTS sisyphus_create_embedding_partition()")
    op.execute("ALTER TABLE embeddings RENAME TO embeddings_partitioned")
    op.execute("ALTER TABLE embeddings_partitioned RENAME CONSTRAINT pk_embeddings TO pk_embeddings_partitioned")
    op.execute("ALTER INDEX ix_embeddings_model_id RENAME TO ix_embeddings_partitioned_model_id")
    op.execute("""
        CREATE TABLE embeddings (
            frame_id bigint NOT NULL,
            model_id integer NOT NULL,
            vec halfvec NOT NULL,
            CONSTRAINT pk_embeddings PRIMARY KEY (frame_id, model_id),
            CONSTRAINT fk_embeddings_frame_id_frames FOREIGN KEY (frame_id) REFERENCES frames (id) ON DELETE CASCADE,
            CONSTRAINT fk_embeddings_model_id_models FOREIGN KEY (model_id) REFERENCES models (id) ON DELETE CASCADE
        )
    """)
    op.execute("CREATE INDEX ix_embeddings_model_id ON embeddings (model_id, frame_id)")
    op.execute("INSERT INTO embeddings (frame_id, model_id, vec) SELECT frame_id, model_id, vec FROM embeddings_partitioned")
    op.execute("DROP TABLE embeddings_partitioned CASCADE")
    _recreate_views()


def _recreate_views() -> None:
    # DROP ... CASCADE took the views that read embeddings with it; the view files are idempotent.
    import importlib.resources

    for name in ("views.sql",):
        op.execute(importlib.resources.files("sisyphus_db.sql").joinpath(name).read_text())
