"""Structured filters compile to SQL whose values are all bound parameters (no database needed)."""

from __future__ import annotations

from datetime import datetime

import pytest

from sisyphus_db.errors import FilterError
from sisyphus_db.search.filters import where_description, where_parts
from sisyphus_db.serve.filters import FIELDS, OPS, compile_filters, fields_help, parse_filters_json

HOSTILE = "berlin'); DROP TABLE frames; --"


def test_no_conditions_compile_to_no_filter() -> None:
    assert compile_filters([]) is None
    assert parse_filters_json(None) == [] and parse_filters_json("  ") == []


@pytest.mark.parametrize("op", [op for op in OPS if op not in ("in", "between", "is_null")])
def test_values_and_tag_keys_never_reach_the_sql_text(op: str) -> None:
    compiled = compile_filters([{"field": "sources.tags." + HOSTILE, "op": op, "value": HOSTILE},
                                {"field": "sources.uri", "op": op, "value": HOSTILE}])
    assert compiled is not None
    assert HOSTILE not in compiled.sql and "DROP" not in compiled.sql
    assert sorted(compiled.params.values()) == sorted([HOSTILE, HOSTILE, HOSTILE])
    assert all(f"%({name})s" in compiled.sql for name in compiled.params)
    assert HOSTILE in compiled.description  # what search_runs.filter records
    sql, params = where_parts(compiled)
    assert sql == compiled.sql and params == dict(compiled.params)
    assert where_description(compiled) == compiled.description and where_description("a = 1") == "a = 1"


def test_types_are_checked_and_cast() -> None:
    compiled = compile_filters([
        {"field": "frames.id", "op": "in", "value": [3, 4.0]},
        {"field": "frames.pts_seconds", "op": "between", "value": [1, 2.5]},
        {"field": "frames.captured_at", "op": ">=", "value": "2026-01-02T03:04:05+00:00"},
        {"field": "sources.tags.speed", "op": ">", "value": 60},
        {"field": "sources.codec", "op": "!=", "value": "h264"},
        {"field": "frames.keyframe_score", "op": "is_null", "value": False},
    ])
    assert compiled is not None
    values = list(compiled.params.values())
    assert [3, 4] in values and 1.0 in values and 2.5 in values and 60.0 in values
    assert any(isinstance(v, datetime) for v in values)
    assert "CAST(" in compiled.sql and "bigint[]" in compiled.sql and "IS DISTINCT FROM" in compiled.sql
    assert "frames.keyframe_score IS NOT NULL" in compiled.sql
    # A numeric tag comparison never casts text that is not a number (no cast errors at query time).
    assert "THEN (sources.tags ->>" in compiled.sql


@pytest.mark.parametrize(("conditions", "message"), [
    ({"field": "frames.id"}, "must be a list"),
    ([{"field": "frames.width", "op": "=", "value": True}], "string or a number"),
    ([{"field": "frames.width", "op": "=", "value": 1.5}], "integer"),
    ([{"field": "frames.width", "op": "=", "value": 2**70}], "integer"),
    ([{"field": "frames.pts_seconds", "op": "<", "value": float("nan")}], "finite"),
    ([{"field": "sources.uri", "op": "=", "value": 3}], "string"),
    ([{"field": "sources.kind", "op": "is_null", "value": "yes"}], "true or false"),
    ([{"field": "frames.id", "op": "in", "value": list(range(1001))}], "at most 1000"),
    ([{"field": "frames.id", "op": "LIKE", "value": 1}], "unknown operator"),
    ([{"field": "", "op": "=", "value": 1}], "field name"),
    ([{"field": "frames.id", "op": "=", "value": 1}] * 51, "at most 50"),
])
def test_bad_conditions_fail_with_one_clear_line(conditions: object, message: str) -> None:
    with pytest.raises(FilterError, match=message) as info:
        compile_filters(conditions)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_the_documented_fields_are_the_whitelist() -> None:
    listed = {entry["field"] for entry in fields_help()}
    assert set(FIELDS) <= listed and {"sources.tags.<key>", "frames.metadata.<key>"} <= listed
    assert all(name.startswith(("frames.", "sources.")) for name in FIELDS)
