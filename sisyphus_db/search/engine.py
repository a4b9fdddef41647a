"""Query planning: filter -> candidate set -> faiss, pgvector or exact -> exact rerank -> persist."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError, InputError
from sisyphus_db.search.backends import Neighbours, exact_neighbours, faiss_neighbours, pgvector_neighbours
from sisyphus_db.search.filters import FrameFilter, Where, where_description
from sisyphus_db.search.queries import Query
from sisyphus_db.search.runs import SearchHit, frame_details, save_run
from sisyphus_db.store.indexes import IndexRecord, find_index, find_index_and_backlog
from sisyphus_db.store.registry import StoredModel

logger = logging.getLogger(__name__)

BACKENDS = ("faiss", "pgvector", "exact")
MAX_K = 10_000


@dataclass(frozen=True)
class SearchRequest:
    k: int = 10
    backend: str = "faiss"
    where: Where | None = None  # a --where string, or a SqlFilter compiled from structured filters
    nprobe: int | None = None
    ef_search: int | None = None
    per_source: int | None = None
    save: bool = True
    name: str | None = None


@dataclass
class SearchOutcome:
    run_id: int | None
    hits: list[SearchHit]
    backend: str
    params: dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "backend": self.backend, "params": self.params,
                "elapsed_ms": round(self.elapsed_ms, 3), "results": [hit.to_json() for hit in self.hits]}


class SearchMethod(Protocol):
    """Another way to find frames (regions, bag of words): the planner keeps the rest.

    `neighbours(depth)` returns the nearest `depth` frames (ids, distances, nearest first)
    with the request's filter already applied, and whether asking for more could not find
    others; `boxes` says where in each returned frame the match is.
    """

    name: str
    params: dict[str, Any]
    boxes: dict[int, tuple[int, int, int, int]]
    warnings: list[str]

    def neighbours(self, depth: int) -> tuple[Neighbours, bool]: ...


def validate_request(request: SearchRequest) -> None:
    if request.backend not in BACKENDS:
        raise InputError(f"unknown backend {request.backend!r}: expected one of {', '.join(BACKENDS)}")
    if not 1 <= request.k <= MAX_K:
        raise InputError(f"--k must be between 1 and {MAX_K}, got {request.k}")
    if request.nprobe is not None and request.backend != "faiss":
        raise InputError("--nprobe applies to the faiss backend only")
    if request.nprobe is not None and request.nprobe < 1:
        raise InputError(f"--nprobe must be at least 1, got {request.nprobe}")
    if request.per_source is not None and request.per_source < 1:
        raise InputError(f"--per-source must be at least 1, got {request.per_source}")


def search(db: Database, model: StoredModel, query: Query, request: SearchRequest, *,
           loaded: tuple[IndexRecord, Any] | None = None, method: SearchMethod | None = None,
           refine: Any = None) -> SearchOutcome:
    """Run one search and, unless request.save is False, store it as a search run.

    `method`: find the frames another way (sisyphus_db.local); k, --per-source, the
    deepening loop, the metadata join and the stored run stay the same.

    `loaded`: the faiss registry row and its index already in memory (the server keeps them
    and checks the registry itself), so a faiss search neither queries the registry nor
    touches the index file; `refine`: the refine store loaded with that index.
    """
    validate_request(request)
    with db.one_connection() as pinned:
        return _search(pinned, model, query, request, loaded=loaded, method=method, refine=refine)


def _search(db: Database, model: StoredModel, query: Query, request: SearchRequest, *,
            loaded: tuple[IndexRecord, Any] | None, method: SearchMethod | None, refine: Any) -> SearchOutcome:
    started = time.perf_counter()
    warnings: list[str] = []
    preloaded = loaded is not None and request.backend == "faiss"
    if method is not None:
        record, index = None, None
        warnings += method.warnings
    else:
        record = loaded[0] if loaded is not None and preloaded else _index_for(db, model, request.backend, warnings)
        index = loaded[1] if loaded is not None and preloaded else None
    if record is not None and request.nprobe is not None:
        from sisyphus_db.ann.params import check_nprobe
        from sisyphus_db.search.indexing import load_faiss_index

        # misspelt or inapplicable: fails loudly
        check_nprobe(index if index is not None else load_faiss_index(record), request.nprobe)
    frame_filter = (FrameFilter(db, request.where, model.id)
                    if request.where and request.backend == "faiss" and method is None else None)
    params: dict[str, Any] = {}

    def neighbours(depth: int) -> tuple[Neighbours, bool]:
        """The nearest `depth` frames, and whether asking for more could not find others."""
        if method is not None:
            return method.neighbours(depth)
        if request.backend == "exact":
            found = exact_neighbours(db, model, query.vector, depth, where=request.where)
            return found, found[0].size < depth
        if request.backend == "pgvector":
            assert record is not None
            ef = request.ef_search or int(record.params.get("ef_search", 40))
            params["ef_search"] = ef
            found = pgvector_neighbours(db, model, query.vector, depth, ef_search=max(ef, depth),
                                        where=request.where)
            return found, found[0].size < depth
        assert record is not None
        found, info = faiss_neighbours(db, model, record, query.vector, depth, nprobe=request.nprobe,
                                       frame_filter=frame_filter, index=index,
                                       store=refine if preloaded else None,
                                       wanted=request.k if request.per_source is None else None)
        # Fewer re-ranked results than candidates is not the end: candidates whose frames
        # were deleted since the last `index update` are dropped, and deeper search refills k.
        exhausted = bool(info.pop("exhausted"))
        params.update(info)
        return found, exhausted

    depth = request.k * (request.per_source and 4 or 1)
    if request.backend == "faiss" and record is not None:
        depth = max(depth, int(record.params.get("rerank_k") or request.k))
    total: int | None = None  # counted only when a first pass falls short: count(*) is a scan
    while True:
        (ids, distances), exhausted = neighbours(depth)
        kept, details = _live_kept(db, ids, distances, request.per_source, request.k,
                                   known=frame_filter.details if frame_filter is not None else {})
        if len(kept) >= request.k or exhausted:
            break
        total = _vector_count(db, model) if total is None else total
        if depth >= total:
            break
        depth = min(total, depth * 4)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    boxes = method.boxes if method is not None else {}
    hits = [
        SearchHit(rank=rank, frame_id=frame_id, distance=float(distance), **details[frame_id], box=boxes.get(frame_id))
        for rank, (frame_id, distance) in enumerate((item for item in kept if item[0] in details), start=1)
    ]
    if method is not None:
        params = {**params, **method.params, "method": method.name,
                  "boxes": {str(hit.frame_id): list(hit.box) for hit in hits if hit.box is not None}}
    params = {**params, "k": request.k, "per_source": request.per_source, "model": model.name}
    run_id = None
    if request.save:
        run_id = save_run(db, model_id=model.id, query=query.description, where=where_description(request.where),
                          backend=request.backend, k=request.k, params=params, elapsed_ms=elapsed_ms,
                          name=request.name, hits=hits)
    return SearchOutcome(run_id, hits, request.backend, params, elapsed_ms, warnings)


def _index_for(db: Database, model: StoredModel, backend: str, warnings: list[str]) -> IndexRecord | None:
    if backend == "exact":
        return None
    # pgvector's HNSW follows the table by itself: only the faiss sidecar has a backlog to count
    record, newer = (find_index_and_backlog(db, model.id, backend) if backend == "faiss"
                     else (find_index(db, model.id, backend), 0))
    if record is None:
        command = "sisyphus index build --backend pgvector" if backend == "pgvector" else "sisyphus index build"
        raise AnnIndexError(f"there is no {backend} index for {model.name}: run `{command}`")
    if newer:
        message = f"{newer} frames are newer than the faiss index and not searched: run `sisyphus index update`"
        warnings.append(message)
        logger.warning(message)
    return record


def _vector_count(db: Database, model: StoredModel) -> int:
    with db.transaction() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM embeddings WHERE model_id = :m"),
                                {"m": model.id}).scalar_one())


def _live_kept(db: Database, ids: npt.NDArray[np.int64], distances: npt.NDArray[np.float32],
               per_source: int | None, k: int, *, known: dict[int, dict[str, Any]]) -> (
        tuple[list[tuple[int, float]], dict[int, dict[str, Any]]]):
    """The first k ranked frames still in the table, with their metadata (one join in the usual case).

    `known`: metadata a filter already read in the same transaction (frames that passed it
    are in the table): those frames need no join.

    The faiss index and its refine store keep a deleted frame until `index update`: the
    metadata join drops it here and the next ranked frames take its place, so PostgreSQL
    stays the truth without a per-query round trip for vectors.
    """
    if per_source is not None:
        kept = _cap_per_source(db, ids, distances, per_source, k)  # joins frames: deleted ones drop out
        return kept, frame_details(db, [frame_id for frame_id, _ in kept])
    pairs = [(int(i), float(d)) for i, d in zip(ids, distances, strict=True) if i >= 0]
    kept: list[tuple[int, float]] = []
    details: dict[int, dict[str, Any]] = {}
    position = 0
    while len(kept) < k and position < len(pairs):
        chunk = pairs[position:position + k - len(kept)]
        position += len(chunk)
        missing = [frame_id for frame_id, _ in chunk if frame_id not in known]
        found = {**{frame_id: known[frame_id] for frame_id, _ in chunk if frame_id in known},
                 **frame_details(db, missing)}
        details.update(found)
        kept += [pair for pair in chunk if pair[0] in found]
    return kept, details


def _cap_per_source(db: Database, ids: npt.NDArray[np.int64], distances: npt.NDArray[np.float32],
                    per_source: int | None, k: int) -> list[tuple[int, float]]:
    pairs = [(int(i), float(d)) for i, d in zip(ids, distances, strict=True) if i >= 0]
    if per_source is None:
        return pairs[:k]
    with db.transaction() as conn:
        sources = dict(conn.execute(sa.text("SELECT id, source_id FROM frames WHERE id = ANY(:ids)"),
                                    {"ids": [i for i, _ in pairs]}).all())
    counts: dict[int, int] = {}
    kept: list[tuple[int, float]] = []
    for frame_id, distance in pairs:
        source = sources.get(frame_id)
        if source is None:
            continue
        if counts.get(source, 0) < per_source:
            counts[source] = counts.get(source, 0) + 1
            kept.append((frame_id, distance))
            if len(kept) == k:
                break
    return kept
