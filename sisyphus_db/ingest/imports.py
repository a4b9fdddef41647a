"""`sisyphus import-embeddings`: vectors computed elsewhere, with their frames, from Parquet files.

Columns: `path` (string) and `embedding` (list, large list or fixed-size list of numbers)
are required; `source` (string), `frame_index` (integer >= 0), `pts_seconds` (number >= 0)
and `tags` (map<string,string> or a JSON object string) are optional.

- Every file is read twice, one row group at a time (pyarrow streaming, bounded memory):
  first to validate all of it, then to load it. A file with a wrong dimension, a missing
  column, a null, a zero or non-finite vector is refused with one line naming the file,
  the row and the reason, before anything is written; the load then runs in ONE
  transaction, so a failure there leaves nothing behind either.
- Frames go through the COPY loader (store.bulk.load_frames) in batches; a re-run adds
  nothing (frames are unique on source, frame_index, path; embeddings on frame, model).
- Frames whose files live elsewhere: frames need width, height and sha256, which an
  imported row does not have. Policy: width = height = 1 and sha256 = sha256 of the path
  string, with frames.metadata {"imported": true, "placeholder": [...]}; keyframe_method is
  'image'. Tags of a row go to frames.metadata.tags and are merged into its source's tags
  (so `--where "sources.tags->>'city' = 'x'"` filters them).
- Sources: the `source` value of a row, else the Parquet file's absolute path; kind
  'video' when the file has frame_index or pts_seconds, else 'folder'. frame_index
  defaults to the row's position within its source in the file; pts_seconds to 0.
- The model is registered with its dimension and no weights (weights_sha256
  'imported:<sha256 of the metric>'): it is searched by --frame and --vector; --image says
  it cannot embed images. Metric: only cosine is supported end to end (faiss, pgvector
  and exact search all rank by cosine distance), so vectors are stored L2-normalised and
  --metric l2|ip is refused rather than silently turned into cosine.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError, ModelError

REQUIRED = ("path", "embedding")
OPTIONAL = ("source", "frame_index", "pts_seconds", "tags")
METRICS = ("cosine", "l2", "ip")
LOAD_BATCH = 20_000  # rows per COPY batch (bounded memory; all batches in one transaction)


@dataclass
class FileCheck:
    path: Path
    rows: int
    dim: int
    columns: tuple[str, ...]


@dataclass
class ImportReport:
    model: str
    dim: int
    metric: str
    files: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    frames_added: int = 0
    embeddings_added: int = 0
    sources: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "dim": self.dim, "metric": self.metric, "files": self.files, "rows": self.rows,
                "frames_added": self.frames_added, "embeddings_added": self.embeddings_added,
                "sources": self.sources, "seconds": round(self.seconds, 3)}


def imported_weights_marker(metric: str) -> str:
    """What models.weights_sha256 holds for an imported model (there are no weights to hash)."""
    return "imported:" + hashlib.sha256(f"sisyphus import-embeddings metric={metric}".encode()).hexdigest()


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InputError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if metric != "cosine":
        raise InputError(f"--metric {metric} is not supported: every sisyphus search (faiss, pgvector, exact) "
                         "ranks by cosine distance; normalise the vectors' meaning to cosine and import them "
                         "with --metric cosine")
    return metric


def _fail(path: Path, message: str) -> InputError:
    return InputError(f"{path}: {message}")


def _row_groups(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, Any]]:
    """(first row number, pyarrow Table) for each row group: one group in memory at a time."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    first = 0
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=list(columns))
        yield first, table
        first += table.num_rows


def _embeddings(path: Path, column: Any, first: int, dim: int | None) -> npt.NDArray[np.float32]:
    """The group's vectors as an (n, d) float32 array, every row checked."""
    import pyarrow as pa

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = col.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise _fail(path, f"column embedding must be a list of numbers, got {kind}")
    value_type = kind.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise _fail(path, f"column embedding must hold numbers, got lists of {value_type}")
    if col.null_count:
        row = first + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise _fail(path, f"row {row}: embedding is null")
    n = len(col)
    if pa.types.is_fixed_size_list(kind):
        lengths = np.full(n, kind.list_size, dtype=np.int64)
    else:
        offsets = col.offsets.to_numpy()
        lengths = np.diff(offsets)
    want = dim if dim is not None else (int(lengths[0]) if n else None)
    if want is not None and n:
        bad = np.flatnonzero(lengths != want)
        if bad.size:
            raise _fail(path, f"row {first + int(bad[0])}: embedding has {int(lengths[bad[0]])} values, expected {want}")
        if want < 1:
            raise _fail(path, f"row {first}: embedding is empty")
    values = col.flatten()
    if values.null_count:
        pos = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise _fail(path, f"row {first + pos // max(want or 1, 1)}: embedding holds a null value")
    vectors = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, want or 0)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise _fail(path, f"row {first + int(np.flatnonzero(~finite)[0])}: embedding has a non-finite value "
                          "(NaN or infinity)")
    norms = np.linalg.norm(vectors, axis=1)
    if n and not (norms > 0).all():
        raise _fail(path, f"row {first + int(np.flatnonzero(norms <= 0)[0])}: embedding is all zeros (no direction)")
    return vectors


def _column(path: Path, table: Any, name: str, first: int) -> list[Any] | None:
    if name not in table.column_names:
        return None
    return table.column(name).to_pylist()


def _tags(path: Path, value: Any, row: int) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise _fail(path, f"row {row}: tags is not a JSON object") from None
        if not isinstance(parsed, dict):
            raise _fail(path, f"row {row}: tags is not a JSON object")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()}
    if isinstance(value, list):  # pyarrow map -> list of (key, value)
        return {str(k): str(v) for k, v in value}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    raise _fail(path, f"row {row}: tags must be a map or a JSON object string")


def _group_tags(path: Path, values: list[Any], first: int) -> list[dict[str, str]]:
    """Each row's tags; a value repeated across rows (a source's tags) is parsed once."""
    parsed: dict[Any, dict[str, str]] = {}
    out: list[dict[str, str]] = []
    for i, value in enumerate(values):
        key = tuple(map(tuple, value)) if isinstance(value, list) else value if not isinstance(value, dict) else None
        if key is None:
            out.append(_tags(path, value, first + i))
            continue
        if key not in parsed:
            parsed[key] = _tags(path, value, first + i)
        out.append(parsed[key])
    return out


def check_file(path: Path, dim: int | None) -> FileCheck:
    """Read a whole file once, refusing it with one line at the first problem."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _fail(path, f"not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        raise _fail(path, f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                          f"(has: {', '.join(schema.names)})")
    columns = tuple(c for c in (*REQUIRED, *OPTIONAL) if c in schema.names)
    for name, test, what in (("path", pa.types.is_string, "strings"), ("source", pa.types.is_string, "strings"),
                             ("frame_index", pa.types.is_integer, "integers"),
                             ("pts_seconds", lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "numbers")):
        if name in schema.names:
            kind = schema.field(name).type
            if not (test(kind) or (name in ("path", "source") and pa.types.is_large_string(kind))):
                raise _fail(path, f"column {name} must hold {what}, got {kind}")
    rows = 0
    try:
        for first, table in _row_groups(path, columns):
            vectors = _embeddings(path, table.column("embedding"), first, dim)
            if dim is None and vectors.shape[0]:
                dim = int(vectors.shape[1])
            paths = table.column("path")
            blank = np.asarray(pc.fill_null(pc.equal(pc.utf8_length(paths), 0), True), dtype=bool)
            if blank.any():
                i = int(np.flatnonzero(blank)[0])
                raise _fail(path, f"row {first + i}: path is {'null' if paths[i].as_py() is None else 'empty'}")
            for name, low in (("frame_index", 0), ("pts_seconds", 0)):
                if name in table.column_names:
                    values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                    bad = np.flatnonzero(~np.isnan(values) & ((values < low) | ~np.isfinite(values)))
                    if bad.size:  # (nulls come out as NaN: allowed, they take the default)
                        value = table.column(name)[int(bad[0])].as_py()
                        raise _fail(path, f"row {first + int(bad[0])}: {name} must be >= {low}, got {value}")
            tags = _column(path, table, "tags", first)
            if tags is not None:
                _group_tags(path, tags, first)
            rows += table.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise _fail(path, f"cannot be read ({str(exc).splitlines()[0]})") from None
    if rows == 0 or dim is None:
        raise _fail(path, "holds no rows")
    return FileCheck(path, rows, dim, columns)


def import_embeddings(db: Database, paths: Sequence[Path], *, model_name: str, metric: str = "cosine",
                      progress: Callable[[int], None] | None = None) -> ImportReport:
    """Validate every file, then load them all in one transaction; see the module doc."""
    from sisyphus_db.store.registry import find_model

    check_metric(metric)
    _refuse_builtin_name(model_name)
    if not paths:
        raise InputError("give at least one Parquet file")
    started = time.perf_counter()
    existing = find_model(db, model_name)
    dim = existing.dim if existing is not None else None
    checks: list[FileCheck] = []
    problems: list[str] = []
    for path in paths:
        try:
            check = check_file(Path(path).resolve(), dim)
        except InputError as exc:
            problems.append(str(exc))
            continue
        dim = check.dim if dim is None else dim
        checks.append(check)
    if problems:
        raise InputError("\n".join(problems) + f"\nnothing was imported ({len(problems)} of {len(paths)} files refused)")
    assert dim is not None
    report = ImportReport(model_name, dim, metric, [{"path": str(c.path), "rows": c.rows} for c in checks])
    if db.bound is not None:  # already inside a caller's transaction: one savepoint around it all
        with db.bound.begin_nested():
            _load(db, checks, report, progress)
    else:
        with db.engine.connect() as conn:  # every write in one transaction: all or nothing
            outer = conn.begin()
            one = Database(url=db.url, engine=db.engine, settings=db.settings, embedded=False, bound=conn)
            try:
                _load(one, checks, report, progress)
                outer.commit()
            except BaseException:
                outer.rollback()
                raise
    if report.frames_added:
        with db.transaction() as conn:
            conn.exec_driver_sql("ANALYZE frames")
    report.seconds = time.perf_counter() - started
    return report


def _refuse_builtin_name(name: str) -> None:
    from sisyphus_db.embed.models import parse_model_name

    if not name.strip():
        raise InputError("--model must name the imported model")
    try:
        parse_model_name(name)
    except Exception:  # noqa: BLE001 - unknown to the embedder registry: a free name
        return
    raise ModelError(f"--model {name} is a built-in embedding model: imported vectors need a name of their own")


def _load(db: Database, checks: list[FileCheck], report: ImportReport,
          progress: Callable[[int], None] | None) -> None:
    from sisyphus_db.store.bulk import FrameRow, load_frames
    from sisyphus_db.store.registry import mark_source_complete, register_model, upsert_source

    model = register_model(db, name=report.model, dim=report.dim, weights_sha256=imported_weights_marker(report.metric),
                           pooling=None, preprocessing={"imported": True, "metric": report.metric})
    source_ids: dict[str, int] = {}
    for check in checks:
        video = "frame_index" in check.columns or "pts_seconds" in check.columns
        next_index: dict[str, int] = {}
        for first, table in _row_groups(check.path, check.columns):
            vectors = _embeddings(check.path, table.column("embedding"), first, report.dim)
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # cosine: stored unit length
            paths = table.column("path").to_pylist()
            sources = _column(check.path, table, "source", first) or [None] * len(paths)
            indexes = _column(check.path, table, "frame_index", first) or [None] * len(paths)
            times = _column(check.path, table, "pts_seconds", first) or [None] * len(paths)
            tags = _column(check.path, table, "tags", first) or [None] * len(paths)
            row_tags = _group_tags(check.path, tags, first)
            uris = [s or str(check.path) for s in sources]
            merged: dict[str, dict[str, str]] = {}
            for uri, t in zip(uris, row_tags, strict=True):
                merged.setdefault(uri, {}).update(t)
            for uri, t in merged.items():
                if uri not in source_ids or t:
                    source_ids[uri] = upsert_source(db, uri=uri, kind="video" if video else "folder", tags=t).id
            rows = []
            shared_metadata: dict[int, dict[str, Any]] = {}
            for i, path in enumerate(paths):
                uri = uris[i]
                index = indexes[i]
                if index is None:
                    index = next_index.get(uri, 0)
                next_index[uri] = max(next_index.get(uri, 0), int(index) + 1)
                metadata = _metadata(row_tags[i], shared_metadata)
                rows.append(FrameRow(source_id=source_ids[uri], frame_index=int(index),
                                     pts_seconds=float(times[i] or 0.0), path=path, width=1, height=1,
                                     sha256=hashlib.sha256(path.encode()).hexdigest(), keyframe_method="image",
                                     metadata=metadata))
            for start in range(0, len(rows), LOAD_BATCH):
                loaded = load_frames(db, model.id, rows[start:start + LOAD_BATCH], vectors[start:start + LOAD_BATCH])
                report.frames_added += loaded.frames_added
                report.embeddings_added += loaded.embeddings_added
                if progress is not None:
                    progress(min(LOAD_BATCH, len(rows) - start))
            report.rows += len(rows)
    for source_id in set(source_ids.values()):
        mark_source_complete(db, source_id)
    report.sources = len(set(source_ids.values()))


def _metadata(tags: dict[str, str], shared: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """frames.metadata of an imported row; rows with the same tags object share one dict (read only)."""
    key = id(tags)
    if key not in shared:
        shared[key] = {"imported": True, "placeholder": ["width", "height", "sha256"], **({"tags": tags} if tags else {})}
    return shared[key]
