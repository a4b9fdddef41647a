"""One writer of a model's faiss sidecar at a time.

`index build` (local or on Ray), `index update` and `index drop` hold a PostgreSQL
advisory lock, on a connection of their own, for as long as they run. Two writers of one
model at once would each delete the generation the other registers (the previous one, to
them) or is still writing. The second writer fails at once with one clear line instead of
waiting behind a build that may take minutes.

Holding the lock also makes it safe to delete what a killed writer left behind (its
refine generation, its temporary index file): nobody else is writing them.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError
from sisyphus_db.store.registry import StoredModel

# The first half of the two-part advisory key: keeps these locks apart from other users' keys.
LOCK_CLASS = 0x515F


def lock_key(model: StoredModel, kind: str) -> int:
    return zlib.crc32(f"{model.id}:{kind}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def sidecar_writer(db: Database, model: StoredModel, kind: str) -> Iterator[None]:
    """Hold the (model, kind) sidecar lock for the block, or fail if another writer holds it."""
    params = {"cls": LOCK_CLASS, "key": lock_key(model, kind)}
    with db.engine.connect() as conn:
        held = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:cls, :key)"), params).scalar_one())
        conn.commit()  # a session lock outlives the transaction; no transaction stays open for the build
        if not held:
            of = "" if kind == "frames" else f" ({kind})"
            raise AnnIndexError(f"another index build, update or drop of {model.name}{of} is running: "
                                "wait for it to finish and run this again")
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:cls, :key)"), params)
            conn.commit()
