"""Binary COPY of fixed-width rows to and from numpy arrays, without a Python loop over rows.

The labelling jobs move millions of small rows (1M frames x 10 edges in, a score per
frame out). psycopg's `write_row` costs a few microseconds per row in Python; building the
whole binary COPY stream as one numpy structured array costs nanoseconds per row.
Every column here has a fixed width (integers, reals, booleans, and text or jsonb that is
the same for every row, such as the label's name), so a row is a fixed-size record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from sisyphus_db.errors import DatabaseError

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = b"\xff\xff"
_PARSE_BYTES = 8 << 20
_WRITE_ROWS = 1 << 18

# PostgreSQL type -> big-endian numpy type of its binary form.
NUMERIC = {"bigint": ">i8", "integer": ">i4", "smallint": ">i2", "real": ">f4", "double precision": ">f8",
           "boolean": "u1"}


def _constant_bytes(kind: str, value: Any) -> bytes:
    if kind == "text":
        return str(value).encode()
    if kind == "jsonb":
        import json

        return b"\x01" + json.dumps(value, sort_keys=True).encode()  # jsonb binary: version 1, then text
    raise DatabaseError(f"no fixed binary form for a constant {kind} column")


def encode_rows(columns: Sequence[tuple[str, str]], values: Mapping[str, Any], n: int) -> npt.NDArray[np.void]:
    """The binary COPY records of `n` rows: numeric columns from arrays (or scalars), text/jsonb constants."""
    fields: list[tuple[str, Any]] = [("count", ">i2")]
    filled: dict[str, Any] = {}
    for name, kind in columns:
        if kind in NUMERIC:
            fields += [(f"{name}_len", ">i4"), (name, NUMERIC[kind])]
            filled[name] = values[name]
        else:
            raw = _constant_bytes(kind, values[name])
            fields += [(f"{name}_len", ">i4"), (name, f"S{len(raw)}" if raw else "V0")]
            filled[name] = raw
    records = np.empty(n, dtype=np.dtype(fields))
    records["count"] = len(columns)
    for name, kind in columns:
        width = records.dtype[name].itemsize
        records[f"{name}_len"] = width
        if width:
            records[name] = filled[name]
    return records


def copy_in(conn: psycopg.Connection[Any], table: str, columns: Sequence[tuple[str, str]],
            values: Mapping[str, Any], n: int) -> None:
    """COPY `n` rows into `table` in binary; numeric columns are arrays of length n (or scalars)."""
    names = ", ".join(name for name, _ in columns)
    with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(HEADER)
        for start in range(0, n, _WRITE_ROWS):
            stop = min(n, start + _WRITE_ROWS)
            part = {name: (value[start:stop] if isinstance(value, np.ndarray) else value)
                    for name, value in values.items()}
            copy.write(encode_rows(columns, part, stop - start).tobytes())
        copy.write(TRAILER)


def copy_out(conn: psycopg.Connection[Any], select: str, kinds: Sequence[str],
             progress: Callable[[int], None] | None = None) -> list[npt.NDArray[Any]]:
    """Run `COPY (select) TO STDOUT (FORMAT BINARY)` over NOT NULL numeric columns; one array per column."""
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i, kind in enumerate(kinds):
        fields += [(f"len{i}", ">i4"), (f"v{i}", NUMERIC[kind])]
    row = np.dtype(fields)
    parts: list[npt.NDArray[np.void]] = []
    buffer = bytearray()
    header_done = False

    def parse(final: bool) -> None:
        rows = len(buffer) // row.itemsize
        if final and len(buffer) - rows * row.itemsize != len(TRAILER):
            raise DatabaseError("unexpected binary COPY trailer (a NULL or variable-width column?)")
        if rows == 0:
            return
        block = np.frombuffer(bytes(buffer[: rows * row.itemsize]), dtype=row)
        if (block["count"] != len(kinds)).any():
            raise DatabaseError("unexpected binary COPY row layout")
        del buffer[: rows * row.itemsize]
        parts.append(block)
        if progress is not None:
            progress(rows)

    with conn.cursor().copy(f"COPY ({select}) TO STDOUT (FORMAT BINARY)") as copy:
        for data in copy:
            buffer += data
            if not header_done and len(buffer) >= len(HEADER):
                if bytes(buffer[:11]) != HEADER[:11]:
                    raise DatabaseError("not a binary COPY stream")
                extension = int.from_bytes(buffer[15:19], "big")
                if len(buffer) < 19 + extension:
                    continue
                del buffer[: 19 + extension]
                header_done = True
            if header_done and len(buffer) >= _PARSE_BYTES:
                parse(final=False)
    parse(final=True)
    out: list[npt.NDArray[Any]] = []
    for i, kind in enumerate(kinds):
        native = np.dtype(NUMERIC[kind]).newbyteorder("=")
        out.append(np.concatenate([p[f"v{i}"] for p in parts]).astype(native) if parts else np.empty(0, native))
    return out
