"""Structured filters -> SQL with bound parameters: the API never accepts SQL text.

A filter is a list of conditions, all of which must hold:
`[{"field": "sources.tags.city", "op": "=", "value": "berlin"}, {"field": "frames.pts_seconds", "op": ">", "value": 60}]`.
Fields come from a whitelist of frame and source columns, plus `sources.tags.<key>` and
`frames.metadata.<key>`; every value (and every tag key) is a bound parameter, so a value
that looks like SQL is matched literally. The result is a SqlFilter that every search plan
(faiss, pgvector, exact) accepts where the CLI passes its `--where` text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sisyphus_db.errors import FilterError
from sisyphus_db.search.filters import SqlFilter

OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "between", "is_null")
MAX_CONDITIONS = 50
MAX_IN_VALUES = 1000
MAX_KEY_LENGTH = 200
TAG_PREFIX = "sources.tags."
METADATA_PREFIX = "frames.metadata."
# A number written as text (tags are strings): compared numerically when the value is a number.
_NUMERIC_TEXT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # integer | number | text | timestamp
    description: str
    nullable: bool = False


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("frames.id", "integer", "frame id"),
    Field("frames.source_id", "integer", "the frame's source id"),
    Field("frames.frame_index", "integer", "index of the frame in its video (0 for a still image)"),
    Field("frames.pts_seconds", "number", "time of the frame in its video, seconds"),
    Field("frames.width", "integer", "frame width, pixels"),
    Field("frames.height", "integer", "frame height, pixels"),
    Field("frames.captured_at", "timestamp", "capture time (EXIF) when known", nullable=True),
    Field("frames.keyframe_method", "text", "image, scene, similarity, iframe or fps"),
    Field("frames.keyframe_score", "number", "key-frame selection score", nullable=True),
    Field("frames.path", "text", "stored path of the frame image"),
    Field("frames.sha256", "text", "sha256 of the frame image"),
    Field("frames.created_at", "timestamp", "when the frame was ingested"),
    Field("sources.id", "integer", "source id"),
    Field("sources.uri", "text", "the video file, image file or folder"),
    Field("sources.kind", "text", "video, image or folder"),
    Field("sources.duration_seconds", "number", "video duration, seconds", nullable=True),
    Field("sources.fps", "number", "video frame rate", nullable=True),
    Field("sources.width", "integer", "video width, pixels", nullable=True),
    Field("sources.height", "integer", "video height, pixels", nullable=True),
    Field("sources.codec", "text", "video codec", nullable=True),
    Field("sources.keyframe_method", "text", "how the source's key frames were chosen", nullable=True),
    Field("sources.created_at", "timestamp", "when the source was first ingested"),
)}
_SQL_TYPES = {"integer": "bigint", "number": "double precision", "text": "text", "timestamp": "timestamptz"}


def fields_help() -> list[dict[str, Any]]:
    """The filterable fields, for /api/config and the page's form controls."""
    listed = [{"field": f.name, "type": f.type, "description": f.description, "nullable": f.nullable}
              for f in FIELDS.values()]
    listed.append({"field": TAG_PREFIX + "<key>", "type": "text", "nullable": True,
                   "description": "a source tag (ingest --tag KEY=VALUE); compared numerically when the value is a "
                                  "number"})
    listed.append({"field": METADATA_PREFIX + "<key>", "type": "text", "nullable": True,
                   "description": "a key of the frame's metadata; compared numerically when the value is a number"})
    return listed


class _Compiler:
    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def bind(self, value: Any, sql_type: str) -> str:
        name = f"api_f{len(self.params)}"
        self.params[name] = value
        return f"CAST(%({name})s AS {sql_type})"

    def condition(self, position: int, item: Any) -> str:
        where = f"filter {position + 1}"
        if not isinstance(item, dict):
            raise FilterError(f"{where} must be an object with field, op and value, got {_kind(item)}")
        unknown = sorted(set(item) - {"field", "op", "value"})
        if unknown:
            raise FilterError(f"{where} has unknown keys {', '.join(map(repr, unknown))}: use field, op and value")
        field_name, op = item.get("field"), item.get("op")
        if not isinstance(field_name, str) or not field_name:
            raise FilterError(f"{where} needs a field name")
        if not isinstance(op, str) or op not in OPS:
            raise FilterError(f"{where}: unknown operator {op!r}: expected one of {', '.join(OPS)}")
        where = f"filter {position + 1} ({field_name} {op})"
        value = item.get("value")
        if field_name.startswith((TAG_PREFIX, METADATA_PREFIX)):
            return self.json_condition(where, field_name, op, value)
        spec = FIELDS.get(field_name)
        if spec is None:
            raise FilterError(f"unknown filter field {field_name!r}: expected one of {', '.join(FIELDS)}, "
                              f"{TAG_PREFIX}<key> or {METADATA_PREFIX}<key>")
        return self.column_condition(where, spec, op, value)

    def column_condition(self, where: str, spec: Field, op: str, value: Any) -> str:
        column, sql_type = spec.name, _SQL_TYPES[spec.type]
        if op == "is_null":
            return f"{column} IS {'' if _flag(where, value) else 'NOT '}NULL"
        if op == "in":
            values = [_typed(where, spec.type, v) for v in _list(where, value)]
            return f"{column} = ANY({self.bind(values, sql_type + '[]')})"
        if op == "between":
            low, high = (_typed(where, spec.type, v) for v in _pair(where, value))
            return f"{column} BETWEEN {self.bind(low, sql_type)} AND {self.bind(high, sql_type)}"
        bound = self.bind(_typed(where, spec.type, value), sql_type)
        # != keeps rows where the column is NULL: "not 'h264'" includes frames without a codec.
        return f"{column} IS DISTINCT FROM {bound}" if op == "!=" else f"{column} {op} {bound}"

    def json_condition(self, where: str, field_name: str, op: str, value: Any) -> str:
        prefix = TAG_PREFIX if field_name.startswith(TAG_PREFIX) else METADATA_PREFIX
        key = field_name[len(prefix):]
        if not key or len(key) > MAX_KEY_LENGTH or any(ord(ch) < 32 for ch in key):
            raise FilterError(f"{where}: give a key after {prefix!r} (at most {MAX_KEY_LENGTH} characters)")
        column = "sources.tags" if prefix == TAG_PREFIX else "frames.metadata"
        text = f"({column} ->> {self.bind(key, 'text')})"
        if op == "is_null":
            return f"{text} IS {'' if _flag(where, value) else 'NOT '}NULL"
        values = _list(where, value) if op == "in" else _pair(where, value) if op == "between" else [value]
        scalars = [_scalar(where, v) for v in values]
        numeric = [v for v in scalars if not isinstance(v, str)]
        if numeric and len(numeric) != len(scalars):
            raise FilterError(f"{where}: mix of numbers and strings; use one kind")
        if numeric:
            # Text that is not a number becomes NULL and simply does not match (never a cast error).
            expr, sql_type = f"(CASE WHEN {text} ~ '{_NUMERIC_TEXT}' THEN {text}::double precision END)", \
                "double precision"
            scalars = [float(v) for v in scalars]
        else:
            expr, sql_type = text, "text"
        if op == "in":
            return f"{expr} = ANY({self.bind(scalars, sql_type + '[]')})"
        if op == "between":
            return f"{expr} BETWEEN {self.bind(scalars[0], sql_type)} AND {self.bind(scalars[1], sql_type)}"
        bound = self.bind(scalars[0], sql_type)
        return f"{expr} IS DISTINCT FROM {bound}" if op == "!=" else f"{expr} {op} {bound}"


def parse_filters_json(text: str | None) -> list[Any]:
    """The `filters` form field of an upload: a JSON list (empty or missing: no filter)."""
    if text is None or not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FilterError(f"filters is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, list):
        raise FilterError(f"filters must be a JSON list of conditions, got {_kind(value)}")
    return value


def compile_filters(conditions: Sequence[Any], *, extra: Sequence[str] = ()) -> SqlFilter | None:
    """AND of the conditions as a SqlFilter, or None when there are none.

    `extra`: internal SQL conditions (never user text), e.g. excluding the query's own source.
    """
    if not isinstance(conditions, (list, tuple)):
        raise FilterError(f"filters must be a list of conditions, got {_kind(conditions)}")
    if len(conditions) > MAX_CONDITIONS:
        raise FilterError(f"at most {MAX_CONDITIONS} filter conditions, got {len(conditions)}")
    compiler = _Compiler()
    parts = [compiler.condition(i, item) for i, item in enumerate(conditions)]
    if not parts and not extra:
        return None
    description = json.dumps(list(conditions), separators=(",", ":"), default=str) if conditions else ""
    return SqlFilter(" AND ".join(f"({p})" for p in [*parts, *extra]), compiler.params, description)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _flag(where: str, value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, bool):
        raise FilterError(f"{where}: value must be true or false (or left out), got {value!r}")
    return value


def _list(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise FilterError(f"{where}: value must be a non-empty list")
    if len(value) > MAX_IN_VALUES:
        raise FilterError(f"{where}: at most {MAX_IN_VALUES} values, got {len(value)}")
    return value


def _pair(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise FilterError(f"{where}: value must be a list of two values [low, high]")
    return value


def _scalar(where: str, value: Any) -> str | int | float:
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise FilterError(f"{where}: value must be a string or a number, got {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"{where}: value must be a finite number")
    return value


def _typed(where: str, kind: str, value: Any) -> Any:
    value = _scalar(where, value)
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise FilterError(f"{where}: value must be an integer, got {value!r}")
        return value
    if kind == "number":
        if isinstance(value, str):
            raise FilterError(f"{where}: value must be a number, got {value!r}")
        return float(value)
    if kind == "timestamp":
        if not isinstance(value, str):
            raise FilterError(f"{where}: value must be an ISO 8601 time, e.g. '2026-01-31T12:00:00+00:00'")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise FilterError(f"{where}: {value!r} is not an ISO 8601 time") from None
    if not isinstance(value, str):
        raise FilterError(f"{where}: value must be a string, got {value!r}")
    return value
