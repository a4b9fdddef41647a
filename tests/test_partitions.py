"""Embeddings are list-partitioned by model: each model gets its partition on registration,
and searches and joins on one model prune to that partition (checked with EXPLAIN)."""

from __future__ import annotations

import sqlalchemy as sa
from vector_data import make_corpus

from sisyphus_db.db.database import Database
from sisyphus_db.search.pgvector_index import build_pgvector_index, embedding_partition, hnsw_index_name
from sisyphus_db.store.registry import register_model


def _plan(database: Database, sql: str, params: dict[str, object]) -> str:
    with database.transaction() as conn:
        return "\n".join(row[0] for row in conn.execute(sa.text(f"EXPLAIN {sql}"), params))


def _partition_of(database: Database, table: str) -> str | None:
    with database.transaction() as conn:
        return conn.execute(sa.text(
            "SELECT parent.relname FROM pg_inherits i JOIN pg_class child ON child.oid = i.inhrelid "
            "JOIN pg_class parent ON parent.oid = i.inhparent WHERE child.relname = :t"), {"t": table}).scalar()


def test_registering_a_model_creates_its_partition(database: Database) -> None:
    model = register_model(database, name="partition-probe", dim=8, weights_sha256="0" * 64, pooling=None,
                           preprocessing={})
    assert _partition_of(database, embedding_partition(model.id)) == "embeddings"
    # Registering it again (ON CONFLICT DO NOTHING) neither fails nor adds a partition.
    register_model(database, name="partition-probe", dim=8, weights_sha256="0" * 64, pooling=None, preprocessing={})
    with database.transaction() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'embeddings'::regclass "
                                     "AND inhrelid = CAST(:t AS regclass)"), {"t": embedding_partition(model.id)})
        assert count.scalar_one() == 1


def test_rows_land_in_their_models_partition_and_queries_prune(database: Database) -> None:
    first = make_corpus(database, n=300, d=16, n_sources=3, model_name="part-a", seed=1)
    second = make_corpus(database, n=200, d=16, n_sources=2, model_name="part-b", seed=2, uri_prefix="/b/clip")
    with database.transaction() as conn:
        for corpus, n in ((first, 300), (second, 200)):
            table = embedding_partition(corpus.model.id)
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() == n
            assert conn.execute(sa.text(f"SELECT count(DISTINCT model_id) FROM {table}")).scalar_one() == 1

    a, b = embedding_partition(first.model.id), embedding_partition(second.model.id)
    scan = _plan(database, "SELECT frame_id FROM embeddings WHERE model_id = :m", {"m": first.model.id})
    assert a in scan and b not in scan
    join = _plan(database, "SELECT f.path FROM frames f JOIN embeddings e ON e.frame_id = f.id "
                 "WHERE e.model_id = :m AND f.pts_seconds > 1", {"m": second.model.id})
    assert b in join and a not in join
    vector = "[" + ",".join(["0.25"] * 16) + "]"
    nearest = _plan(database, "SELECT frame_id FROM embeddings WHERE model_id = :m "
                    "ORDER BY vec::halfvec(16) <=> CAST(:q AS halfvec(16)) LIMIT 10",
                    {"m": first.model.id, "q": vector})
    assert a in nearest and b not in nearest


def test_hnsw_index_lives_on_the_models_partition(database: Database) -> None:
    corpus = make_corpus(database, n=400, d=16, n_sources=4, model_name="part-hnsw", seed=3)
    build_pgvector_index(database, corpus.model, target_recall=0.5)
    with database.transaction() as conn:
        table = conn.execute(sa.text("SELECT tablename FROM pg_indexes WHERE indexname = :n"),
                             {"n": hnsw_index_name(corpus.model)}).scalar_one()
    # test_search_index checks that a query on `embeddings` for the model uses this index.
    assert table == embedding_partition(corpus.model.id)
