"""Database.one_connection: a latency-bound sequence of statements on one connection, in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.store.registry import upsert_source


@pytest.fixture
def db(fresh_database_url: str, tmp_path: Path) -> Iterator[Database]:
    opened = open_database(Settings(home=tmp_path, database_url=fresh_database_url))
    yield opened
    opened.dispose()



def test_every_block_shares_one_connection_and_commits_at_the_end(db: Database) -> None:
    with db.one_connection() as pinned:
        with pinned.transaction() as first, pinned.transaction() as second:
            assert first is second
        upsert_source(pinned, uri="/one/a.mp4", kind="video", tags={})
        with pinned.transaction() as conn:
            pids = {conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()}
            xids = {conn.execute(sa.text("SELECT txid_current()")).scalar_one()}
        upsert_source(pinned, uri="/one/b.mp4", kind="video", tags={})
        with pinned.transaction() as conn:
            assert conn.execute(sa.text("SELECT txid_current()")).scalar_one() in xids  # one transaction
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() in pids
        with db.transaction() as other:  # not visible outside before the end of the block
            assert other.execute(sa.text("SELECT count(*) FROM sources WHERE uri LIKE '/one/%'")).scalar_one() == 0
    with db.transaction() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sources WHERE uri LIKE '/one/%'")).scalar_one() == 2


def test_an_error_rolls_the_whole_block_back(db: Database) -> None:
    with pytest.raises(RuntimeError), db.one_connection() as pinned:
        upsert_source(pinned, uri="/two/a.mp4", kind="video", tags={})
        raise RuntimeError("stop")
    with db.transaction() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sources WHERE uri LIKE '/two/%'")).scalar_one() == 0


def test_nested_use_is_the_same_database(db: Database) -> None:
    with db.one_connection() as pinned, pinned.one_connection() as again:
        assert again is pinned
