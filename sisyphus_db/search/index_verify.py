"""`sisyphus index verify`: a faiss index file, its ids and its refine store against the
registry row and the table. Reads only; says what differs and how to repair it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError
from sisyphus_db.search.indexing import build_command, require_faiss_record
from sisyphus_db.search.refine_sidecar import verify_refine
from sisyphus_db.store.indexes import IndexRecord
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import FRAMES, VectorTable, frame_ids_of_model, vector_table


@dataclass
class VerifyReport:
    record: IndexRecord
    problems: list[str]
    pending: int

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_faiss_index(db: Database, model: StoredModel, *, full: bool = False,
                       kind: str = FRAMES.kind) -> VerifyReport:
    """Check the file against its registry row and its ids against the table; say what differs.

    The refine store is checked too: its checksums, its ids against the index, and its
    vectors against the table (a random sample, or every row with full=True).
    """
    from sisyphus_db.ann.build import index_ids
    from sisyphus_db.ann.files import file_sha256, read_index

    table = vector_table(kind)
    record = require_faiss_record(db, model, kind)
    path = Path(str(record.path))
    problems: list[str] = []
    if not path.exists():
        return VerifyReport(record, [f"index file {path} is missing: rebuild with `{build_command(kind)}`"], 0)
    actual = file_sha256(path)
    if actual != record.sha256:
        problems.append(f"index file {path} has sha256 {actual[:12]}, the registry says {str(record.sha256)[:12]}: "
                        "it was changed or replaced")
    try:
        index = read_index(path, mmap=True)
    except AnnIndexError as exc:
        return VerifyReport(record, [*problems, str(exc)], 0)
    if int(index.ntotal) != record.ntotal:
        problems.append(f"the file holds {index.ntotal} vectors, the registry says {record.ntotal}")
    in_index = index_ids(index)
    in_table = frame_ids_of_model(db, model.id, table)
    covered = in_table[in_table <= record.watermark]
    missing = np.setdiff1d(covered, in_index)
    stale = np.setdiff1d(in_index, in_table)
    pending = int((in_table > record.watermark).sum())
    if missing.size:
        problems.append(f"{missing.size} {_what(table)} at or below the watermark {record.watermark} are missing "
                        f"from the index (e.g. {_sample(missing)}): rebuild with `{build_command(kind)}`")
    if stale.size:
        problems.append(f"{stale.size} ids in the index are no longer in the table (e.g. {_sample(stale)}): "
                        f"run `{build_command(kind, 'update')}`")
    duplicates = in_index.size - np.unique(in_index).size
    if duplicates:
        problems.append(f"{duplicates} ids are stored more than once in the index")
    problems += verify_refine(db, model, record, in_index, full=full, table=table)
    return VerifyReport(record, problems, pending)


def _what(table: VectorTable) -> str:
    """How messages name the table's rows: frames, or e.g. regions."""
    return "frames" if table is FRAMES else table.kind


def _sample(ids: np.ndarray, count: int = 5) -> str:
    return ", ".join(str(int(i)) for i in ids[:count])
