"""`--where`: a boolean SQL expression over frames, sources and tags, run so it cannot write.

The expression is placed in a single SELECT sent with the extended protocol (which
refuses a second statement) inside a READ ONLY transaction with a statement timeout.
A filter that tries to write, holds a second statement or does not parse fails with a
FilterError and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import psycopg.errors

from sisyphus_db.db.database import Database
from sisyphus_db.errors import FilterError
from sisyphus_db.search.runs import DETAIL_COLUMNS, hit_details

FILTER_TIMEOUT_MS = 60_000
FRAME_SOURCE_JOIN = "frames JOIN sources ON sources.id = frames.source_id"


@dataclass(frozen=True)
class SqlFilter:
    """A filter compiled from structured conditions (the HTTP API): SQL text whose values are
    bound parameters (`%(name)s` placeholders), never spliced in, and how to describe it in
    search_runs.filter. Every plan that takes a `--where` string also takes one of these."""

    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


Where = str | SqlFilter


def where_parts(where: Where) -> tuple[str, dict[str, Any]]:
    """The SQL text and bound parameters of a filter (a --where string has none).

    The text goes into statements that carry bound parameters, where `%` starts a
    placeholder: a --where string's own `%` (`LIKE '%.mp4'`) is doubled to mean itself.
    """
    if isinstance(where, SqlFilter):
        return where.sql, dict(where.params)
    return where.replace("%", "%%"), {}


def where_description(where: Where | None) -> str | None:
    """What search_runs.filter records: the --where text, or the structured filter's description."""
    if where is None or isinstance(where, str):
        return where
    return where.description or where.sql


class FrameFilter:
    """A --where filter for one model's frames, evaluated only as far as needed.

    `among(ids)` checks a handful of ANN candidates (cheap for any filter); `all_ids()`
    lists every matching frame (needed for selective filters) and is computed once.
    """

    def __init__(self, db: Database, where: Where, model_id: int) -> None:
        self.source = where
        text, self.params = where_parts(where)
        self.where = text.strip()
        if not self.where:
            raise FilterError("--where is empty: give a boolean SQL expression, e.g. "
                              "\"sources.tags->>'city' = 'berlin'\"")
        self.db = db
        self.model_id = model_id
        self._all: npt.NDArray[np.int64] | None = None
        self.details: dict[int, dict[str, Any]] = {}  # metadata of frames `first_passing` returned
        self._all_frames: npt.NDArray[np.int64] | None = None

    @property
    def key(self) -> tuple[str, int, str, str]:
        """What identifies this filter across searches (the planner remembers its pass rate)."""
        return self.db.url, self.model_id, self.where, repr(sorted(self.params.items()))

    def all_ids(self, *, with_vector: bool = True) -> npt.NDArray[np.int64]:
        """Ids of the frames with a vector under the model that match the filter, ascending.

        with_vector=False skips the join with embeddings (the faiss sidecar looks the ids up
        in its own store, which holds only frames with a vector): a cheaper query for
        filters that match many frames.
        """
        if self._all is not None:
            return self._all
        if not with_vector:
            if self._all_frames is None:
                self._all_frames = self._select("", {}, join_vectors=False)
            return self._all_frames
        self._all = self._select("", {})
        return self._all

    def among(self, candidate_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The candidates that match the filter, ascending."""
        if candidate_ids.size == 0:
            return np.empty(0, dtype=np.int64)
        if self._all is not None:
            return np.intersect1d(candidate_ids, self._all)
        return self._select(" AND frames.id = ANY(%(ids)s)", {"ids": candidate_ids.tolist()})

    def first_passing(self, ranked_ids: npt.NDArray[np.int64], limit: int) -> tuple[npt.NDArray[np.int64], int]:
        """The first `limit` ranked candidates that match the filter (in their given order), and
        how many match in all.

        Their frame and source metadata come back in the same statement and are kept in
        `details`, so the search's metadata join needs no second round trip. A frame deleted
        from the table matches nothing.
        """
        if ranked_ids.size == 0 or limit < 1:
            return np.empty(0, dtype=np.int64), 0
        query = (f"SELECT frames.id, count(*) OVER (), {DETAIL_COLUMNS} "
                 "FROM unnest(%(ranked)s::bigint[]) WITH ORDINALITY AS ranked(candidate_id, candidate_rank) "
                 "JOIN frames ON frames.id = ranked.candidate_id JOIN sources ON sources.id = frames.source_id "
                 f"WHERE ({self.where}) ORDER BY ranked.candidate_rank LIMIT %(limit)s")
        # the ids as one text literal: dumping a list of Python ints costs more than the query
        literal = "{" + ",".join(map(str, ranked_ids.tolist())) + "}"
        # The candidates drive the join (explicit order kept): a tag filter's selectivity is
        # guessed at a fraction of a percent, and the planner otherwise hashed every frame of
        # the matching sources (33 ms for 800 candidates at 50 % instead of about 1 ms).
        rows = self._rows(query, {"ranked": literal, "limit": int(limit)}, keep_join_order=True)
        self.details.update({row[0]: hit_details(row[2:]) for row in rows})
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)), int(rows[0][1]) if rows else 0

    def _select(self, extra: str, params: dict[str, object], *, join_vectors: bool = True) -> npt.NDArray[np.int64]:
        vectors = "JOIN embeddings e ON e.frame_id = frames.id AND e.model_id = %(model)s " if join_vectors else ""
        query = f"SELECT frames.id FROM {FRAME_SOURCE_JOIN} {vectors}WHERE ({self.where}){extra} ORDER BY frames.id"
        rows = self._rows(query, params)
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def _rows(self, query: str, params: dict[str, object], *,
              keep_join_order: bool = False) -> list[tuple[Any, ...]]:
        with self.db.copy_connection() as conn:
            # A savepoint that is always rolled back: it takes the read-only setting with it,
            # so the surrounding transaction can still write (e.g. to save the search run).
            # Pipelined: the savepoint, the settings and the query go out in one round trip.
            try:
                with conn.pipeline(), conn.transaction(force_rollback=True):
                    conn.execute("SELECT set_config('transaction_read_only', 'on', true), "
                                 f"set_config('statement_timeout', '{FILTER_TIMEOUT_MS}', true)"
                                 + (", set_config('join_collapse_limit', '1', true)" if keep_join_order else ""))
                    # Parameters mean the extended protocol, which refuses a second statement.
                    # Id lists are never prepared: a generic plan cannot see the size of the
                    # array and picked nested seq scans (8 s for 6,000 frames instead of ms).
                    # The candidates' join in its fixed order is (psycopg prepares it from its
                    # 5th run): its generic plan is the same index nested loop, without the
                    # ~0.2 ms of planning each search.
                    cursor = conn.execute(query, {**self.params, "model": self.model_id, **params},
                                          prepare=None if keep_join_order else False)
                # Read after the pipeline closed: the rollback went out with the query, one round trip.
                return cursor.fetchall()
            except psycopg.Error as exc:
                raise filter_error(exc) from None


def filtered_frame_ids(db: Database, where: Where, model_id: int) -> npt.NDArray[np.int64]:
    """Ids of the frames with a vector under the model that match the filter, ascending."""
    return FrameFilter(db, where, model_id).all_ids()


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
