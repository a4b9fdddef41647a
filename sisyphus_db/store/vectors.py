"""Reading vectors back out of PostgreSQL: all of a model's (binary COPY), or some by id."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from sisyphus_db.ann.arrays import to_float32
from sisyphus_db.db.database import Database
from sisyphus_db.errors import DatabaseError, InputError

IdsAndVectors = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class VectorTable:
    """Where an index kind's vectors live: a table with a bigint id column, model_id and a halfvec `vec`.

    Every derived index (frames, regions, segments) is built, updated and verified from
    one of these, so the registry, watermark and checksum rules are written once.
    """

    kind: str
    table: str
    id_column: str
    # The table's vectors have dim_factor x the model's dim (segments: mean and max concatenated);
    # functions here take the model's dim and scale it.
    dim_factor: int = 1


FRAMES = VectorTable("frames", "embeddings", "frame_id")
REGIONS = VectorTable("regions", "regions", "id")
SEGMENTS = VectorTable("segments", "segments", "id", dim_factor=2)  # sisyphus_db.temporal
# Other capabilities add theirs with register_vector_table.
VECTOR_TABLES: dict[str, VectorTable] = {FRAMES.kind: FRAMES, REGIONS.kind: REGIONS, SEGMENTS.kind: SEGMENTS}


def register_vector_table(table: VectorTable) -> VectorTable:
    VECTOR_TABLES[table.kind] = table
    return table


def vector_table(kind: str) -> VectorTable:
    try:
        return VECTOR_TABLES[kind]
    except KeyError:
        raise InputError(f"unknown index kind {kind!r}: expected one of {', '.join(VECTOR_TABLES)}") from None


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_PARSE_BYTES = 8 << 20  # parse the COPY stream in blocks of about this many bytes


def _row_dtype(dim: int) -> np.dtype:
    """One binary COPY row of (bigint frame_id, halfvec(dim)): a fixed size, so numpy can parse it."""
    return np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"), ("dim", ">i2"),
                     ("unused", ">i2"), ("vec", ">f2", (dim,))])


def _copy_out_blocks(conn: psycopg.Connection[Any], select: str, dim: int,
                     progress: Callable[[int], None] | None = None) -> Iterator[tuple[npt.NDArray[np.int64],
                                                                                     npt.NDArray[np.float16]]]:
    """Run `COPY (select id, vec ...) TO STDOUT (FORMAT BINARY)` and yield (ids, float16 vectors) blocks.

    Parsing whole blocks of fixed-size rows is ~100x faster than a Python loop over rows
    (1M x 256-d in seconds instead of a minute), which is what reading vectors back for a
    faiss build or an exact rerank of many candidates needs. The vectors stay float16
    (halfvec's own values): a caller that streams them into the refine store needs no
    float32 copy of the whole table.
    """
    row = _row_dtype(dim)
    buffer = bytearray()
    header_done = False

    def parse(final: bool) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float16]] | None:
        nonlocal buffer
        rows = len(buffer) // row.itemsize
        if final and len(buffer) - rows * row.itemsize != 2:
            raise DatabaseError(f"unexpected binary COPY trailer reading {dim}-d vectors")
        if rows == 0:
            return None
        block = np.frombuffer(bytes(buffer[: rows * row.itemsize]), dtype=row)
        if (block["fields"] != 2).any() or (block["dim"] != dim).any() or (block["vec_len"] != 4 + 2 * dim).any():
            raise DatabaseError(f"stored vectors are not all {dim}-d halfvecs: the embeddings table is inconsistent")
        del buffer[: rows * row.itemsize]
        if progress is not None:
            progress(rows)
        return block["id"].astype(np.int64), block["vec"].astype(np.float16)

    with conn.cursor().copy(f"COPY ({select}) TO STDOUT (FORMAT BINARY)") as copy:
        for data in copy:
            buffer += data
            if not header_done and len(buffer) >= 19:
                if bytes(buffer[:11]) != _COPY_SIGNATURE:
                    raise DatabaseError("not a binary COPY stream")
                extension = int.from_bytes(buffer[15:19], "big")
                if len(buffer) < 19 + extension:
                    continue
                del buffer[: 19 + extension]
                header_done = True
            if header_done and len(buffer) >= _PARSE_BYTES:
                parsed = parse(final=False)
                if parsed is not None:
                    yield parsed
    parsed = parse(final=True)
    if parsed is not None:
        yield parsed


def _copy_out_vectors(conn: psycopg.Connection[Any], select: str, dim: int,
                      progress: Callable[[int], None] | None = None) -> IdsAndVectors:
    """All rows of `_copy_out_blocks` at once, as float32."""
    id_parts: list[npt.NDArray[np.int64]] = []
    vec_parts: list[npt.NDArray[np.float32]] = []
    for ids, vectors in _copy_out_blocks(conn, select, dim, progress):
        id_parts.append(ids)
        vec_parts.append(to_float32(vectors))
    ids_all = np.concatenate(id_parts) if id_parts else np.empty(0, dtype=np.int64)
    vectors_all = np.concatenate(vec_parts) if vec_parts else np.empty((0, dim), dtype=np.float32)
    return ids_all, vectors_all


def _model_select(model_id: int, table: VectorTable, above_id: int, up_to_id: int | None) -> str:
    upper = "" if up_to_id is None else f" AND {table.id_column} <= {int(up_to_id)}"
    return (f"SELECT {table.id_column}, vec FROM {table.table} WHERE model_id = {int(model_id)} "
            f"AND {table.id_column} > {int(above_id)}{upper} ORDER BY {table.id_column}")


def model_vectors(
    db: Database,
    model_id: int,
    dim: int,
    *,
    above_id: int = 0,
    progress: Callable[[int], None] | None = None,
    table: VectorTable = FRAMES,
    up_to_id: int | None = None,
) -> IdsAndVectors:
    """Every (id, vector) of a model with above_id < id <= up_to_id, in id order (frame ids for FRAMES).

    up_to_id bounds a shard's id range (sisyphus_db.distributed.index_job); None: no bound."""
    with db.copy_connection() as conn:
        return _copy_out_vectors(conn, _model_select(model_id, table, above_id, up_to_id), dim * table.dim_factor,
                                 progress=progress)


def stream_model_vectors(db: Database, model_id: int, dim: int, *, table: VectorTable = FRAMES,
                         progress: Callable[[int], None] | None = None) -> (
        Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float16]]]):
    """Every (id, float16 vector) of a model in id order, a block (about 8 MiB) at a time."""
    with db.copy_connection() as conn:
        yield from _copy_out_blocks(conn, _model_select(model_id, table, 0, None), dim * table.dim_factor,
                                    progress)


def vector_count(db: Database, model_id: int, table: VectorTable = FRAMES) -> int:
    """How many vectors a model has in the table (an estimate for sizing: it may change after)."""
    with db.copy_connection() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table.table} WHERE model_id = %s", (model_id,)).fetchone()
        return int(row[0]) if row else 0


def vectors_by_id(db: Database, model_id: int, dim: int, frame_ids: Sequence[int] | npt.NDArray[np.int64],
                  table: VectorTable = FRAMES) -> IdsAndVectors:
    """The vectors of these ids under a model, by ascending id; ids that are gone are left out."""
    wanted = np.unique(np.asarray(frame_ids, dtype=np.int64))
    wanted = wanted[wanted >= 0]
    dim = dim * table.dim_factor
    if wanted.size == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, dim), dtype=np.float32)
    with db.copy_connection() as conn:
        # The ids are int64 from numpy, so the array literal cannot carry anything but digits and commas.
        literal = "{" + ",".join(map(str, wanted.tolist())) + "}"
        select = (f"SELECT {table.id_column}, vec FROM {table.table} WHERE model_id = {int(model_id)} "
                  f"AND {table.id_column} = ANY('{literal}'::bigint[]) ORDER BY {table.id_column}")
        return _copy_out_vectors(conn, select, dim)


def frame_ids_of_model(db: Database, model_id: int, table: VectorTable = FRAMES) -> npt.NDArray[np.int64]:
    """Every id of the table under a model (frame ids for FRAMES), ascending."""
    with db.copy_connection() as conn:
        rows = conn.execute(f"SELECT {table.id_column} FROM {table.table} WHERE model_id = %s "
                            f"ORDER BY {table.id_column}", (model_id,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)
