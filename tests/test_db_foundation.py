"""The embedded server, migrations, the ORM/schema agreement and database-level errors."""

from __future__ import annotations

import shutil
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sisyphus_db.config import Settings
from sisyphus_db.db import migrate
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.db.embedded import EmbeddedServer
from sisyphus_db.db.models import Base, Frame, Source
from sisyphus_db.errors import ConfigError, DatabaseError, SchemaError


def _schema_diff(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, Base.metadata))


def test_embedded_server_tcp_needs_the_generated_password() -> None:
    home = Path(tempfile.mkdtemp(prefix="sisyphus-test-tcp-"))
    server = EmbeddedServer(home / "home")
    try:
        status = server.start(port=55_871)
        assert status.running and status.port == 55_871
        assert stat.S_IMODE(server.password_path.stat().st_mode) == 0o600
        url = server.tcp_url()
        assert url is not None and url.startswith("postgresql://postgres:")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect("postgresql://postgres:wrong@127.0.0.1:55871/sisyphus")
        # Started again without a port, the running server is kept as it is.
        assert server.start().port == 55_871
    finally:
        assert server.stop()
    assert not server.status().running
    assert server.stop() is False
    shutil.rmtree(home, ignore_errors=True)


def test_migrations_round_trip(fresh_database_url: str, tmp_path: Path) -> None:
    db = open_database(Settings(home=tmp_path, database_url=fresh_database_url))
    try:
        assert migrate.current_revision(db) == migrate.head_revision()
        migrate.downgrade(db, "base")
        assert migrate.current_revision(db) is None
        with db.engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
        assert tables <= {"alembic_version"}
        migrate.upgrade(db)
        assert migrate.current_revision(db) == migrate.head_revision()
        assert _schema_diff(db) == []
    finally:
        db.dispose()


def test_orm_models_agree_with_the_migrated_schema(database: Database) -> None:
    assert _schema_diff(database) == []


def test_schema_comparison_notices_a_drift(fresh_database_url: str, tmp_path: Path) -> None:
    db = open_database(Settings(home=tmp_path, database_url=fresh_database_url))
    try:
        with db.transaction() as conn:
            conn.execute(sa.text("ALTER TABLE frames ADD COLUMN stray integer"))
        assert any("stray" in str(diff) for diff in _schema_diff(db))
    finally:
        db.dispose()


def test_bi_views_join_search_results_to_frames_and_sources(database: Database) -> None:
    with database.transaction() as conn:
        source_id = conn.execute(sa.text(
            "INSERT INTO sources (uri, kind, tags) VALUES ('/v.mp4', 'video', '{\"city\": \"berlin\"}') RETURNING id"
        )).scalar_one()
        frame_id = conn.execute(sa.text(
            "INSERT INTO frames (source_id, frame_index, pts_seconds, path, width, height, sha256, keyframe_method) "
            "VALUES (:s, 30, 3.0, '/f/0000000030.jpg', 64, 48, repeat('a', 64), 'scene') RETURNING id"
        ), {"s": source_id}).scalar_one()
        run_id = conn.execute(sa.text(
            "INSERT INTO search_runs (backend, k) VALUES ('exact', 5) RETURNING id")).scalar_one()
        conn.execute(sa.text("INSERT INTO search_results VALUES (:r, 1, :f, 0.25)"), {"r": run_id, "f": frame_id})
        row = conn.execute(sa.text(
            "SELECT source_uri, pts_seconds, distance, source_tags->>'city' FROM search_hits WHERE run_id = :r"
        ), {"r": run_id}).one()
    assert tuple(row) == ("/v.mp4", 3.0, 0.25, "berlin")


def test_frames_are_unique_per_source_and_cascade(database: Database) -> None:
    session = database.session()
    source = Source(uri="/videos/a.mp4", kind="video")
    session.add(source)
    session.flush()
    values = dict(source_id=source.id, frame_index=0, pts_seconds=0.0, path="/x/0.jpg", width=8, height=8,
                  sha256="b" * 64, keyframe_method="scene")
    session.add(Frame(**values))
    session.flush()
    with pytest.raises(sa.exc.IntegrityError):
        with session.begin_nested():
            session.add(Frame(**values))
            session.flush()
    with pytest.raises(sa.exc.IntegrityError):
        with session.begin_nested():
            session.add(Frame(**{**values, "path": "/x/1.jpg", "width": 0}))
            session.flush()
    session.delete(source)
    session.flush()
    assert session.scalar(sa.select(sa.func.count()).select_from(Frame)) == 0
    session.close()


def test_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql://nobody@127.0.0.1:1/nothing")
    with pytest.raises(DatabaseError, match=r"^cannot connect to the database at postgresql://nobody@127.0.0.1:1/nothing: "):
        open_database(settings)


def test_password_is_redacted_in_errors(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql://me:secret@127.0.0.1:1/db")
    with pytest.raises(DatabaseError) as info:
        open_database(settings)
    assert "secret" not in str(info.value) and "me:***@" in str(info.value)


def test_database_without_pgvector_is_refused(pg_server: EmbeddedServer, tmp_path: Path) -> None:
    # A non-superuser cannot create the (untrusted) pgvector extension in a database that lacks it.
    admin = psycopg.connect(pg_server.socket_url("postgres"), autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS novector")
    admin.execute("DROP ROLE IF EXISTS plain_user")
    admin.execute("CREATE ROLE plain_user LOGIN")
    admin.execute("CREATE DATABASE novector OWNER plain_user")
    try:
        url = pg_server.socket_url("novector").replace("postgres@", "plain_user@")
        with pytest.raises(DatabaseError, match=r"has no pgvector extension and it cannot be created .*install pgvector"):
            open_database(Settings(home=tmp_path, database_url=url))
    finally:
        admin.execute("DROP DATABASE novector WITH (FORCE)")
        admin.execute("DROP ROLE plain_user")
        admin.close()


def test_schema_older_or_newer_than_the_code_is_refused(fresh_database_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=fresh_database_url)
    db = open_database(settings, require_schema=False)
    try:
        migrate.downgrade(db, "base")
        with pytest.raises(SchemaError, match=r"^the database has no sisyphus schema: run `sisyphus db upgrade`$"):
            open_database(settings)
        with db.transaction() as conn:
            conn.execute(sa.text("INSERT INTO alembic_version VALUES ('9999')"))
        with pytest.raises(SchemaError, match=r"revision 9999\) is newer than this sisyphus"):
            open_database(settings)
    finally:
        db.dispose()


def test_unwritable_home_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"^SISYPHUS_HOME .*/file/home cannot be written: "):
        Settings(home=blocker / "home").ensure_home()
