"""`sisyphus dedup`: near-duplicate groups stored in `duplicate_groups`, with counts for the report.

A dedup method finds the pairs of frames closer than a threshold and measures each grouped
frame's distance to its group's representative; grouping, storing and counting are shared.
`embedding` (the default) reads the pairs from the stored k-NN graph (`knn_edges`, cosine
distance). A new method (e.g. perceptual hashes) is one class with `pairs` and `distances`
added to METHODS.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.label.binary_copy import copy_in
from sisyphus_db.label.components import Groups, duplicate_groups
from sisyphus_db.label.graph import GraphError, knn_graph_command, load_edges, require_graph
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import vectors_by_id

Pairs = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
_CHUNK = 1 << 16  # frames whose vectors are read at once when measuring distances to representatives


class DedupMethod(Protocol):
    name: str
    default_threshold: float

    def check_threshold(self, threshold: float) -> float: ...

    def pairs(self, db: Database, model: StoredModel, threshold: float) -> Pairs: ...

    def distances(self, db: Database, model: StoredModel, frame_ids: npt.NDArray[np.int64],
                  group_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]: ...


class EmbeddingMethod:
    """Pairs from the k-NN graph with cosine distance < threshold; distances from the stored vectors."""

    name = "embedding"
    default_threshold = 0.05

    def check_threshold(self, threshold: float) -> float:
        if not 0.0 < threshold <= 2.0:
            raise InputError(f"--threshold is a cosine distance in (0, 2], got {threshold}")
        return float(threshold)

    def pairs(self, db: Database, model: StoredModel, threshold: float) -> Pairs:
        require_graph(db, model, 10)
        edges = load_edges(db, model, below=threshold)
        return edges.source, edges.target

    def distances(self, db: Database, model: StoredModel, frame_ids: npt.NDArray[np.int64],
                  group_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        out = np.zeros(frame_ids.size, dtype=np.float32)
        order = np.argsort(group_ids, kind="stable")  # a chunk then holds whole groups, mostly
        for start in range(0, order.size, _CHUNK):
            part = order[start:start + _CHUNK]
            ids, vectors = vectors_by_id(db, model.id, model.dim, np.concatenate([frame_ids[part], group_ids[part]]))
            at_frame, at_rep = np.searchsorted(ids, frame_ids[part]), np.searchsorted(ids, group_ids[part])
            if ids.size == 0 or np.any(ids[np.minimum(at_frame, ids.size - 1)] != frame_ids[part]) or \
                    np.any(ids[np.minimum(at_rep, ids.size - 1)] != group_ids[part]):
                raise GraphError(f"frames of the k-NN graph have no {model.name!r} vector any more: rebuild it with "
                                 f"`{knn_graph_command(model, 10)}`")
            cosine = np.einsum("ij,ij->i", vectors[at_frame], vectors[at_rep])
            out[part] = np.clip(1.0 - cosine, 0.0, 2.0)
        out[frame_ids == group_ids] = 0.0
        return out


METHODS: dict[str, DedupMethod] = {"embedding": EmbeddingMethod()}


def _add_hash_method() -> None:
    # Perceptual hashes (sisyphus_db.temporal): `sisyphus dedup --method phash --max-distance D`.
    from sisyphus_db.temporal.hash_dedup import PhashMethod

    METHODS["phash"] = PhashMethod()


_add_hash_method()


@dataclass(frozen=True)
class GroupSummary:
    group_id: int
    size: int
    sources: int
    max_distance: float
    representative_path: str


@dataclass(frozen=True)
class DedupReport:
    method: str
    model: str
    threshold: float
    pairs: int
    groups: int
    frames_in_groups: int
    cross_video_groups: int
    within_video_groups: int
    droppable_frames: int
    representative_rule: str
    read_seconds: float
    group_seconds: float
    write_seconds: float
    largest: list[GroupSummary] = field(default_factory=list)
    # Byte-identical frames (same sha256), from methods that report them (phash).
    exact_duplicates: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        for key in ("read_seconds", "group_seconds", "write_seconds"):
            document[key] = round(document[key], 3)
        return document


REPRESENTATIVE_RULE = "the frame with the most near-duplicates in its group, ties to the lowest frame id"


def method_names() -> list[str]:
    return sorted(METHODS)


def find_duplicates(db: Database, model: StoredModel, *, threshold: float | None = None,
                    method: str = "embedding", largest: int = 10) -> DedupReport:
    """Group the model's near-duplicate frames and replace its rows in duplicate_groups."""
    if method not in METHODS:
        raise InputError(f"unknown dedup method {method!r}: expected one of {', '.join(method_names())}")
    chosen = METHODS[method]
    limit = chosen.check_threshold(chosen.default_threshold if threshold is None else threshold)

    started = time.perf_counter()
    a, b = chosen.pairs(db, model, limit)
    read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    groups = duplicate_groups(a, b)
    group_seconds = time.perf_counter() - started
    started = time.perf_counter()
    distances = chosen.distances(db, model, groups.frame_id, groups.group_id) if groups.frames else \
        np.empty(0, dtype=np.float32)
    _store(db, model, method, groups, distances, limit)
    write_seconds = time.perf_counter() - started

    counts, top = _counts(db, model, method, largest)
    return DedupReport(method=method, model=model.name, threshold=limit, pairs=int(a.size), groups=counts[0],
                       frames_in_groups=counts[1], cross_video_groups=counts[2], within_video_groups=counts[3],
                       droppable_frames=counts[1] - counts[0], representative_rule=REPRESENTATIVE_RULE,
                       read_seconds=read_seconds, group_seconds=group_seconds, write_seconds=write_seconds,
                       largest=top, exact_duplicates=chosen.extra(db, model) if hasattr(chosen, "extra") else None)


def _store(db: Database, model: StoredModel, method: str, groups: Groups, distances: npt.NDArray[np.float32],
           threshold: float) -> None:
    with db.copy_connection() as conn:
        conn.execute("DELETE FROM duplicate_groups WHERE model_id = %s AND method = %s", (model.id, method))
        # The binary COPY writes numeric columns only: stage them, then add the method in SQL.
        conn.execute("CREATE TEMP TABLE duplicate_stage (model_id integer, frame_id bigint, group_id bigint, "
                     "is_representative boolean, distance real, threshold real) ON COMMIT DROP")
        copy_in(conn, "duplicate_stage",
                [("model_id", "integer"), ("frame_id", "bigint"), ("group_id", "bigint"),
                 ("is_representative", "boolean"), ("distance", "real"), ("threshold", "real")],
                {"model_id": model.id, "frame_id": groups.frame_id, "group_id": groups.group_id,
                 "is_representative": groups.is_representative, "distance": distances, "threshold": threshold},
                groups.frames)
        conn.execute("INSERT INTO duplicate_groups (model_id, method, frame_id, group_id, is_representative, distance, "
                     "threshold) SELECT model_id, %s, frame_id, group_id, is_representative, distance, threshold "
                     "FROM duplicate_stage", (method,))
        conn.execute("DROP TABLE duplicate_stage")


def _counts(db: Database, model: StoredModel, method: str,
            largest: int) -> tuple[tuple[int, int, int, int], list[GroupSummary]]:
    with db.transaction() as conn:
        row = conn.execute(sa.text(
            "SELECT count(*), coalesce(sum(size), 0), count(*) FILTER (WHERE sources > 1), "
            "count(*) FILTER (WHERE sources = 1) FROM duplicate_group_sizes WHERE model_id = :m AND method = :k"),
            {"m": model.id, "k": method}).one()
        top = conn.execute(sa.text(
            "SELECT group_id, size, sources, max_distance, representative_path FROM duplicate_group_sizes "
            "WHERE model_id = :m AND method = :k ORDER BY size DESC, group_id LIMIT :n"),
            {"m": model.id, "k": method, "n": largest}).all()
    return ((int(row[0]), int(row[1]), int(row[2]), int(row[3])),
            [GroupSummary(int(r[0]), int(r[1]), int(r[2]), float(r[3]), r[4]) for r in top])
