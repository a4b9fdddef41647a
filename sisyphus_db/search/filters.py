"""`--where`: a boolean SQL expression over frames, sources and tags, run so it cannot write.

The expression is placed in a single SELECT sent with the extended protocol (which
refuses a second statement) inside a READ ONLY transaction with a statement timeout.
A filter that tries to write, holds a second statement or does not parse fails with a
FilterError and changes nothing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import psycopg
import psycopg.errors

from sisyphus_db.db.database import Database
from sisyphus_db.errors import FilterError

FILTER_TIMEOUT_MS = 60_000
FRAME_SOURCE_JOIN = "frames JOIN sources ON sources.id = frames.source_id"


def filtered_frame_ids(db: Database, where: str, model_id: int) -> npt.NDArray[np.int64]:
    """Ids of the frames with a vector under the model that match the filter, ascending."""
    expression = where.strip()
    if not expression:
        raise FilterError("--where is empty: give a boolean SQL expression, e.g. \"sources.tags->>'city' = 'berlin'\"")
    query = (
        f"SELECT frames.id FROM {FRAME_SOURCE_JOIN} "
        "JOIN embeddings e ON e.frame_id = frames.id AND e.model_id = %(model)s "
        f"WHERE ({expression}) ORDER BY frames.id"
    )
    with db.copy_connection() as conn:
        # A savepoint that is always rolled back: it takes the read-only setting with it,
        # so the surrounding transaction can still write (e.g. to save the search run).
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET LOCAL transaction_read_only = on")
                conn.execute(f"SET LOCAL statement_timeout = {FILTER_TIMEOUT_MS}")
                rows = conn.execute(query, {"model": model_id}, prepare=True).fetchall()
        except psycopg.Error as exc:
            raise filter_error(exc) from None
    return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))


def filter_error(exc: psycopg.Error) -> FilterError:
    message = (exc.diag.message_primary or str(exc)).strip().splitlines()[0]
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return FilterError(f"--where must not change data: {message}")
    if isinstance(exc, (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable)):
        return FilterError(f"--where names an unknown column or table: {message} (use frames.*, sources.*, "
                           "sources.tags->>'key')")
    if isinstance(exc, psycopg.errors.SyntaxError) or "multiple commands" in message:
        # `a; DELETE ...` fails to parse inside the parentheses the filter is wrapped in;
        # one that closes them first reaches the extended protocol's single-statement rule.
        if "multiple commands" in message or message.endswith('at or near ";"'):
            return FilterError("--where must be a single boolean expression, not several statements")
        return FilterError(f"--where does not parse: {message}")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return FilterError(f"--where took longer than {FILTER_TIMEOUT_MS // 1000} s")
    return FilterError(f"--where failed: {message}")
