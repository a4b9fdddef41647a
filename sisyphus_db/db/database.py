"""Opening the database: the embedded server by default, any PostgreSQL with pgvector on request.

No engine is built at import time; `open_database` turns settings into a checked
connection: reachable, with pgvector, and (unless asked otherwise) at the schema
revision this code expects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from sisyphus_db.config import Settings
from sisyphus_db.errors import ConfigError, DatabaseError

logger = logging.getLogger(__name__)

MIN_PGVECTOR = (0, 7)  # halfvec arrived in pgvector 0.7
_VECTOR_TYPES_REGISTERED: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


def libpq_url(url: str) -> str:
    """A URL psycopg and psql accept, whatever SQLAlchemy dialect prefix it carries."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def sqlalchemy_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def file_slug(name: str) -> str:
    """A name made safe for a file or folder name (index files, per-database folders)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


def first_line(exc: BaseException) -> str:
    """The first meaningful line of a driver error, for one-line messages."""
    origin = getattr(exc, "orig", None) or exc
    for line in str(origin).splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("FATAL:").strip()
    return origin.__class__.__name__


@dataclass
class Database:
    """A checked connection to the sisyphus database.

    Library code does its work in `transaction()` blocks. When `bound` is set (tests),
    every block is a savepoint inside that one connection's transaction, so a test's
    writes are rolled back at its end. When `pinned` is set (`one_connection()`), every
    block runs directly on that connection, inside its one transaction.
    """

    url: str
    engine: Engine
    settings: Settings
    embedded: bool
    bound: sa.Connection | None = None
    pinned: sa.Connection | None = None

    @property
    def index_dir(self) -> Path:
        """Where this database's index files go: a folder per database name under the home's
        `indexes/`, so two databases sharing one home never overwrite each other's files."""
        name = sa.engine.make_url(sqlalchemy_url(self.url)).database or "default"
        return self.settings.index_dir / file_slug(name)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A connection in a transaction that commits at the end of the block."""
        if self.pinned is not None:
            yield self.pinned
            return
        if self.bound is not None:
            with self.bound.begin_nested():
                yield self.bound
            return
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def one_connection(self) -> Iterator[Database]:
        """This database with every `transaction()` block on one connection, in one transaction.

        A search is a handful of short statements (registry, filter, metadata, saved run):
        a pool checkout with its liveness ping, BEGIN and COMMIT for each cost more than the
        statements themselves. The block commits at its end; an error rolls all of it back.
        """
        if self.bound is not None or self.pinned is not None:
            yield self
            return
        with self.engine.begin() as conn:
            yield dataclasses.replace(self, pinned=conn)

    def session(self) -> Session:
        if self.pinned is not None:
            return Session(bind=self.pinned, join_transaction_mode="create_savepoint", expire_on_commit=False)
        if self.bound is not None:
            return Session(bind=self.bound, join_transaction_mode="create_savepoint", expire_on_commit=False)
        return sessionmaker(self.engine, expire_on_commit=False)()

    @contextlib.contextmanager
    def copy_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A psycopg connection inside a transaction, pgvector types registered, for binary COPY."""
        from pgvector.psycopg import register_vector

        with self.transaction() as conn:
            driver = conn.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            # Registering looks the types up in the catalog: once per pooled connection.
            if driver not in _VECTOR_TYPES_REGISTERED:
                register_vector(driver)
                _VECTOR_TYPES_REGISTERED.add(driver)
            yield driver

    def dispose(self) -> None:
        self.engine.dispose()


def resolve_url(settings: Settings, *, start: bool = True) -> str:
    """The database URL: the configured one, or the embedded server's (started on demand)."""
    if settings.database_url:
        return settings.database_url
    from sisyphus_db.db.embedded import EmbeddedServer

    settings.ensure_home()
    server = EmbeddedServer(settings.home)
    if start:
        server.start()
    return server.socket_url()


def connect_engine(url: str) -> Engine:
    try:
        engine = sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True)
    except ArgumentError:
        raise ConfigError(f"not a PostgreSQL URL: {redact(url)}") from None
    except Exception as exc:  # noqa: BLE001 - malformed URLs raise assorted errors
        raise ConfigError(f"not a usable PostgreSQL URL {redact(url)}: {first_line(exc)}") from None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (DBAPIError, psycopg.Error) as exc:
        engine.dispose()
        raise DatabaseError(f"cannot connect to the database at {redact(url)}: {first_line(exc)}") from None
    return engine


def ensure_pgvector(engine: Engine, url: str) -> str:
    """Make sure pgvector >= 0.7 is installed in the database; returns its version."""
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        if version is None:
            try:
                conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
                conn.commit()
            except DBAPIError as exc:
                raise DatabaseError(
                    f"the database at {redact(url)} has no pgvector extension and it cannot be created "
                    f"({first_line(exc)}): install pgvector >= 0.7"
                ) from None
            version = conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
    parts = tuple(int(p) for p in re.findall(r"\d+", str(version))[:2])
    if parts < MIN_PGVECTOR:
        raise DatabaseError(f"pgvector {version} is too old (halfvec needs >= 0.7): ALTER EXTENSION vector UPDATE")
    return str(version)


def open_database(settings: Settings, *, require_schema: bool = True) -> Database:
    """Connect, check pgvector and, unless `require_schema` is False, the schema revision.

    A brand-new embedded database is migrated on first use; any other database whose
    schema is missing or older than the code is refused with a one-line SchemaError.
    """
    url = resolve_url(settings)
    engine = connect_engine(url)
    ensure_pgvector(engine, url)
    db = Database(url=url, engine=engine, settings=settings, embedded=settings.uses_embedded_database)
    if require_schema:
        from sisyphus_db.db import migrate

        if db.embedded and migrate.current_revision(db) is None:
            logger.info("creating the sisyphus schema in the new embedded database")
            migrate.upgrade(db)
        migrate.check_schema(db)
    return db
