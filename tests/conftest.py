"""Shared fixtures: one real embedded PostgreSQL for the session, migrated databases.

- `database`: a Database whose work is rolled back at the end of each test.
- `fresh_database_url`: a new committed database cloned from a migrated template, for
  tests that run the CLI, other processes, or need commits.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from sisyphus_db.config import Settings
from sisyphus_db.db import migrate
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.db.embedded import EmbeddedServer

TEMPLATE = "sisyphus_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedServer]:
    # Not under pytest's tmp root: it is kept 0700, and as root the server runs as another user.
    home = Path(tempfile.mkdtemp(prefix="sisyphus-test-pg-"))
    server = EmbeddedServer(home)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def _admin(server: EmbeddedServer) -> psycopg.Connection:
    return psycopg.connect(server.socket_url("postgres"), autocommit=True)


@pytest.fixture(scope="session")
def template_url(pg_server: EmbeddedServer) -> str:
    """A database migrated with the real migrations, cloned by the other fixtures."""
    with _admin(pg_server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    url = pg_server.socket_url(TEMPLATE)
    db = open_database(Settings(home=pg_server.home, database_url=url), require_schema=False)
    migrate.upgrade(db)
    db.dispose()
    return url


def create_database_from_template(server: EmbeddedServer) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _admin(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    return server.socket_url(name)


@pytest.fixture
def fresh_database_url(pg_server: EmbeddedServer, template_url: str) -> Iterator[str]:
    url = create_database_from_template(pg_server)
    yield url
    with _admin(pg_server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.split("/")[-1].split("?")[0]}" WITH (FORCE)')


_session_urls: list[str] = []


@pytest.fixture(scope="session")
def session_database(pg_server: EmbeddedServer, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    url = create_database_from_template(pg_server)
    _session_urls.append(url)
    home = tmp_path_factory.mktemp("sisyphus-home")
    db = open_database(Settings(home=home, database_url=url))
    yield db
    db.dispose()


@pytest.fixture(autouse=True)
def _forget_filter_pass_rates() -> Iterator[None]:
    """The planner remembers each filter's pass rate per process: tests start without that memory."""
    from sisyphus_db.search.pass_rates import PASS_RATES

    PASS_RATES.clear()
    yield


@pytest.fixture(scope="module", autouse=True)
def _vacuum_session_database() -> Iterator[None]:
    """Rolled-back test data stays behind as dead rows; without a vacuum every later
    sequential scan (exact search, filters) wades through all earlier tests' rows."""
    yield
    for url in _session_urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM frames, embeddings, sources, search_runs, search_results, knn_edges")


@pytest.fixture
def database(session_database: Database) -> Iterator[Database]:
    """The session database, every write of the test rolled back at its end."""
    with session_database.engine.connect() as conn:
        outer = conn.begin()
        yield Database(
            url=session_database.url,
            engine=session_database.engine,
            settings=session_database.settings,
            embedded=False,
            bound=conn,
        )
        outer.rollback()


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> "CliRunner":
    monkeypatch.setenv("SISYPHUS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SISYPHUS_DATABASE_URL", raising=False)
    return CliRunner(monkeypatch)


class CliRunner:
    """Runs `sisyphus ...` in this process, as the console script would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        from sisyphus_db.cli.main import main

        for key, value in (env or {}).items():
            self.monkeypatch.setenv(key, value)
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return CliResult(code, out.getvalue(), err.getvalue())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # GPU tests skip cleanly on machines without CUDA (CI never has one).
    has_gpu = False
    with contextlib.suppress(Exception):
        import torch

        has_gpu = torch.cuda.is_available()
    if has_gpu or os.environ.get("SISYPHUS_FORCE_GPU_TESTS"):
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
