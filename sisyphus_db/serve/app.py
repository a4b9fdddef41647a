"""The FastAPI application: `create_app(config)` wires the state, the token rule, limits, errors and routers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import sqlalchemy as sa
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from sisyphus_db import __version__
from sisyphus_db.db.database import Database, open_database, sqlalchemy_url
from sisyphus_db.errors import ConfigError
from sisyphus_db.label.labels import current_user
from sisyphus_db.serve.auth import TokenMiddleware, is_loopback
from sisyphus_db.serve.errors import install_error_handlers
from sisyphus_db.serve.routers import frames, labels, runs, search, sources, system
from sisyphus_db.serve.state import ServeConfig, ServerState
from sisyphus_db.serve.uploads import BodyLimitMiddleware

logger = logging.getLogger(__name__)


def _server_engine(db: Database, threads: int, *, durable: bool) -> Database:
    """A Database on its own pool for the server, as large as the thread pool so searches never queue.

    No pre-ping (a round trip per transaction, several per search): a connection lost
    when PostgreSQL restarts fails one request with a 503 and the pool reconnects.
    `durable=False`, the search pool: each statement commits on its own (autocommit: no
    BEGIN/COMMIT round trips around the single-statement reads of a search; the stored run
    is one statement too, and the planner's filters open their own read-only transaction
    blocks), and commits do not wait for the WAL flush (synchronous_commit off): a
    PostgreSQL crash can lose the last fraction of a second of stored runs, never corrupt
    anything. Labels, which are people's work, go through the durable pool: transactions,
    each commit on disk before the answer.
    """
    options = {} if durable else {"options": "-c synchronous_commit=off"}
    engine = sa.create_engine(sqlalchemy_url(db.url), pool_pre_ping=False, pool_size=threads + 2,
                              max_overflow=threads, connect_args=options,
                              isolation_level=None if durable else "AUTOCOMMIT")
    return Database(url=db.url, engine=engine, settings=db.settings, embedded=db.embedded)


def create_app(config: ServeConfig, *, db: Database | None = None) -> FastAPI:
    """The app for one server. `db`: an open database to use (tests); by default it is opened at start-up.

    Refuses (ConfigError) a bind beyond loopback without tokens.
    """
    if config.tokens is None and not is_loopback(config.host):
        raise ConfigError(f"serving on {config.host} (not loopback) needs a token: give --token-file or let "
                          "`sisyphus serve` generate one")
    if config.max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {config.max_upload_mb:g}")
    if config.threads < 1:
        raise ConfigError(f"--workers-threads must be at least 1, got {config.threads}")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = config.threads
        owned = db is None
        opened = await run_in_threadpool(open_database, config.settings) if owned else db
        assert opened is not None
        if opened.bound is None:  # tests may hand in a connection-bound database: use it as it is
            fast = _server_engine(opened, config.threads, durable=False)
            durable = _server_engine(opened, max(2, config.threads // 2), durable=True)
        else:
            fast = durable = opened
        state = ServerState(config, fast, durable)
        app.state.server = state
        if config.preload:
            await run_in_threadpool(state.preload)
        try:
            yield
        finally:
            state.close()
            for database in {id(d): d for d in (fast, durable)}.values():
                if database is not opened:
                    database.dispose()
            if owned:
                opened.dispose()

    app = FastAPI(title="sisyphus-db", version=__version__, lifespan=lifespan,
                  description="Search key frames by image, frame, vector or class name; browse sources and runs; "
                              "label frames. Errors are JSON: {\"error\": \"...\"}.")
    app.state.local_user = current_user()
    install_error_handlers(app)
    for module in (system, search, frames, sources, runs, labels):
        app.include_router(module.router)
    from sisyphus_db.serve import page

    app.include_router(page.router)
    # The last added runs first: the token is checked before any body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_upload_bytes)
    app.add_middleware(TokenMiddleware, tokens=config.tokens, local_user=app.state.local_user)
    return app
