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


def _server_engine(db: Database, threads: int) -> None:
    """A connection pool as large as the thread pool, so concurrent searches never queue for one."""
    if db.bound is not None:
        return
    old = db.engine
    db.engine = sa.create_engine(sqlalchemy_url(db.url), pool_pre_ping=True, pool_size=threads + 2,
                                 max_overflow=threads)
    old.dispose()


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
        database = await run_in_threadpool(open_database, config.settings) if owned else db
        assert database is not None
        if owned:
            _server_engine(database, config.threads)
        state = ServerState(config, database)
        app.state.server = state
        if config.preload:
            await run_in_threadpool(state.preload)
        try:
            yield
        finally:
            if owned:
                database.dispose()

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
