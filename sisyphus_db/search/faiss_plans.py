"""faiss search plans: ANN candidates from the sidecar, re-ranked in memory from its refine store.

Plans (`info["strategy"]`), for one query of `depth` re-ranked results:
- `ann`: no filter; the index's `depth` nearest candidates, re-ranked exactly.
- `filter-candidates`: the top `CANDIDATES_FIRST x depth` ANN candidates are re-ranked in
  memory, then one statement returns the nearest of them that pass the filter, in order,
  with their metadata (for the engine's k, only the `depth` nearest are checked, the first
  slice sized by the filter's pass rate seen by earlier searches: `pass_rates`); a broad
  filter keeps enough of them and no id list is built. `filter_checked` in the info says
  how many candidates the filter looked at (0: known to be selective, not tried).
- otherwise the allowed ids are evaluated once by PostgreSQL (`FrameFilter.all_ids`), then
  searched in memory without another round trip:
  - `exact-filtered`: at most `EXACT_MAX` allowed frames are compared exactly with the
    query over their float16 rows of the refine store (perfect recall, a few ms);
  - `id-selector`: a faiss IDSelector (hash set) over the allowed ids, nprobe widened by
    the inverse selectivity, re-ranked exactly;
  - `over-fetch`: a broad filter's deeper unfiltered ANN pass checked against the ids.
Indexes registered before refine stores existed fall back to fetching the candidates'
vectors from PostgreSQL (and exact filtered search in SQL), as before.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.ann.refine import RefineStore
from sisyphus_db.ann.threads import one_thread
from sisyphus_db.db.database import Database
from sisyphus_db.search.filters import FrameFilter
from sisyphus_db.search.pass_rates import PASS_RATES
from sisyphus_db.store.indexes import IndexRecord
from sisyphus_db.store.registry import StoredModel

Neighbours = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]

EXACT_MAX = 60_000               # allowed frames searched exactly over the refine store's rows
EXACT_MAX_WITHOUT_STORE = 20_000  # the same in SQL, for indexes without a refine store
SELECTOR_MAX_FRACTION = 0.25     # below this fraction of the index, search only the allowed ids
CANDIDATES_FIRST = 4             # a filter is first checked on this many times `depth` ANN candidates
ENOUGH_PASSING_DIVISOR = 4       # ... and that plan is kept when at least depth / this many pass,
ENOUGH_PASSING_MIN = 50          # and at least this many (the top k allowed are then among them)
# Candidates checked first, times the caller's k: at a 10 % filter 16 x k usually hold k passing ones
# (8 x k needed a second statement a third of the time: +0.7-1.5 ms), and more lookups cost little.
FIRST_SLICE = 16
PLANS = ("filter-candidates", "exact-filtered", "id-selector", "over-fetch")


def faiss_neighbours(db: Database, model: StoredModel, record: IndexRecord, query: npt.NDArray[np.float32],
                     depth: int, *, nprobe: int | None, frame_filter: FrameFilter | None, index: Any = None,
                     plan: str | None = None, store: RefineStore | None = None,
                     wanted: int | None = None) -> tuple[Neighbours, dict[str, Any]]:
    """The `depth` nearest frames (ids, cosine distances), nearest first, and what was done.

    `wanted`: how many of them the caller will use (the engine's k); the filter-candidates
    plan then returns only that many, with their metadata already in `frame_filter.details`.

    `index`: the loaded index when the caller holds one (the server), else the cached file;
    `store`: its refine store when the caller holds one (the server keeps the generation it
    loaded mapped, so a search finishes on it after `index update` deleted its files).
    `plan`: force one filtered plan (benchmarks and tests compare them); default: chosen.
    """
    with one_thread():
        return _neighbours(db, model, record, query, depth, nprobe=nprobe, frame_filter=frame_filter, index=index,
                           plan=plan, store=store, wanted=wanted)


def _neighbours(db: Database, model: StoredModel, record: IndexRecord, query: npt.NDArray[np.float32],
                depth: int, *, nprobe: int | None, frame_filter: FrameFilter | None, index: Any,
                plan: str | None, store: RefineStore | None, wanted: int | None) -> tuple[Neighbours, dict[str, Any]]:
    from sisyphus_db.ann.search import search
    from sisyphus_db.search.indexing import load_faiss_index
    from sisyphus_db.search.refine_sidecar import load_refine

    index = load_faiss_index(record) if index is None else index
    store = load_refine(record) if store is None else store
    ntotal = int(index.ntotal)
    nprobe = nprobe or record.params.get("nprobe")
    info: dict[str, Any] = {"nprobe": nprobe, "rerank_k": depth, "rerank": "memory" if store else "postgres"}
    if frame_filter is None:
        info["strategy"] = "ann"
        _, found = search(index, query[None, :], min(depth, ntotal), nprobe=nprobe)
        candidates = found[0]
        info["exhausted"] = int((candidates >= 0).sum()) < depth
        return _rerank(db, model, store, query, candidates, depth), info

    if plan in (None, "filter-candidates"):
        found_first = _candidates_first(index, store, db, model, query, depth, nprobe=nprobe,
                                        frame_filter=frame_filter, plan=plan, wanted=wanted, info=info)
        if found_first is not None:
            return found_first, info

    # With a store, the ids need no join with embeddings: only stored frames have rows in it.
    allowed = frame_filter.all_ids(with_vector=store is None)
    if store is not None:
        allowed = allowed[store.rows_of(allowed) >= 0]
    PASS_RATES.observe(frame_filter.key, int(allowed.size), ntotal, everything=True)
    fraction = allowed.size / max(1, ntotal)
    info["selectivity"] = round(fraction, 6)
    exact_max = EXACT_MAX if store is not None else EXACT_MAX_WITHOUT_STORE
    chosen = plan or ("exact-filtered" if allowed.size <= exact_max
                      else "id-selector" if fraction < SELECTOR_MAX_FRACTION else "over-fetch")
    info["strategy"] = chosen
    if chosen == "exact-filtered":
        if store is None:
            from sisyphus_db.search.backends import exact_neighbours

            found_exact = exact_neighbours(db, model, query, depth, where=getattr(frame_filter, "source", frame_filter.where))
        else:
            found_exact = store.exact_among(query, allowed, depth)
        info["exhausted"] = found_exact[0].size < depth
        return found_exact, info
    if chosen == "id-selector" or allowed.size == 0:
        widened = _widen(index, nprobe, fraction)
        info["nprobe"] = widened
        _, found = search(index, query[None, :], max(1, min(depth, allowed.size)), nprobe=widened,
                          allowed_ids=allowed)
        candidates = found[0]
    else:
        deeper = min(ntotal, math.ceil(depth / max(fraction, 1e-6) * 1.5))
        _, found = search(index, query[None, :], deeper, nprobe=nprobe)
        candidates = found[0][np.isin(found[0], allowed)]
        if candidates.size < min(depth, allowed.size):
            info["strategy"] = "over-fetch+id-selector"
            _, found = search(index, query[None, :], min(depth, allowed.size),
                              nprobe=_widen(index, nprobe, fraction), allowed_ids=allowed)
            candidates = found[0]
    # Exhausted: the index had no more candidates to give (deleted frames do not count as given).
    info["exhausted"] = int((candidates >= 0).sum()) < depth
    return _rerank(db, model, store, query, candidates, depth), info


def _candidates_first(index: Any, store: RefineStore | None, db: Database, model: StoredModel,
                      query: npt.NDArray[np.float32], depth: int, *, nprobe: int | None, frame_filter: FrameFilter,
                      plan: str | None, wanted: int | None, info: dict[str, Any]) -> Neighbours | None:
    """The filter-candidates plan: the nearest passing frames among the top ANN candidates, or
    None when too few of them pass (a selective filter: the allowed ids must be listed)."""
    from sisyphus_db.ann.search import search

    ntotal = int(index.ntotal)
    few = wanted is not None and wanted < depth and plan is None
    rate = PASS_RATES.guess(frame_filter.key) if few else None
    if rate is not None and rate * depth < int(wanted or 0):
        # Seen before as too selective for the `depth` nearest to hold `wanted` passing frames:
        # checking them would only delay listing the allowed ids.
        info["filter_checked"] = 0
        return None
    fetch = min(ntotal, depth * CANDIDATES_FIRST)
    _, found = search(index, query[None, :], fetch, nprobe=nprobe)
    fetched = found[0][found[0] >= 0]
    # Re-ranked first (in memory, a fraction of a millisecond), so that one statement
    # returns the nearest passing frames in order, with their metadata and the count.
    # For the caller's few, only the `depth` nearest are ever checked: only they are ordered.
    ranked, distances = _rerank(db, model, store, query, fetched, depth if few else int(fetched.size))
    # Every indexed frame was a candidate: nothing else can match. (Fewer candidates than
    # asked for can also mean the probed lists were short: that is not exhaustion.)
    complete = fetched.size >= ntotal
    if few:
        # The caller needs only `wanted`: when that many pass among the `depth` nearest
        # candidates (as accurate as an unfiltered search at this depth), they are the
        # nearest allowed frames. Each candidate checked is an index lookup, most of the
        # plan's cost: the nearest ones are checked first, in growing slices sized by the
        # filter's pass rate, so a broad filter is answered from a few dozen lookups.
        assert wanted is not None
        passing = np.empty(0, dtype=np.int64)
        checked = passed = 0
        for start, stop in _slices(depth, int(wanted), rate):
            more, matched_here = frame_filter.first_passing(ranked[start:stop], int(wanted) - passing.size)
            passing = np.concatenate([passing, more])
            checked, passed = checked + ranked[start:stop].size, passed + matched_here
            if passing.size >= int(wanted):
                break
            # At the pass rate seen so far, would the rest of the `depth` nearest hold enough?
            # If not, the filter is selective: go to the allowed-ids plans without more lookups.
            if passing.size * (depth / stop) < int(wanted):
                break
        PASS_RATES.observe(frame_filter.key, passed, checked)
        info["filter_checked"] = checked
        matched, enough = int(passing.size), int(wanted)
    else:
        passing, matched = frame_filter.first_passing(ranked, depth)
        PASS_RATES.observe(frame_filter.key, matched, int(ranked.size))
        info["filter_checked"] = int(ranked.size)
        # Enough passing candidates: the true nearest allowed frames rank near the top of
        # the unfiltered list when the filter is broad (e.g. >= 6 % of the frames at depth
        # 200, 4 x 200 candidates, 50 passing). Fewer than `depth` is fine: the engine
        # deepens the search if k are not reached.
        enough = min(depth, max(ENOUGH_PASSING_MIN, depth // ENOUGH_PASSING_DIVISOR))
    if plan == "filter-candidates" or matched >= enough or (complete and not few):
        info["strategy"] = "filter-candidates"
        info["exhausted"] = matched < depth and (complete or plan == "filter-candidates")
        keep = np.isin(ranked, passing)
        return ranked[keep], distances[keep]
    return None


def _rerank(db: Database, model: StoredModel, store: RefineStore | None, query: npt.NDArray[np.float32],
            candidates: npt.NDArray[np.int64], depth: int) -> Neighbours:
    """Exact order of the candidates: from the refine store in memory, else from PostgreSQL."""
    candidates = candidates[candidates >= 0]
    if candidates.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    if store is not None:
        distances, ids = store.rerank(query[None, :], candidates[None, :], min(depth, int(candidates.size)))
        keep = ids[0] >= 0
        return ids[0][keep], distances[0][keep]
    from sisyphus_db.ann.search import exact_rerank
    from sisyphus_db.store.vectors import vectors_by_id

    ids, vectors = vectors_by_id(db, model.id, model.dim, candidates)
    if ids.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    ranked, distances = exact_rerank(query, ids, vectors, min(depth, int(ids.size)))
    return ranked, distances


def bulk_neighbours(record: IndexRecord, queries: npt.NDArray[np.float32], k: int, *, depth: int | None = None,
                    nprobe: int | None = None, index: Any = None, batch_size: int = 4096) -> (
        tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]):
    """Many queries at once: one batched ANN search per block, re-ranked in memory (no SQL).

    Returns (cosine distances (m, k), frame ids (m, k)), -1/inf padded. Frames deleted from
    the table since the last `index update` may appear: join the ids back to the table
    (as single search's metadata join does), or run `index update` first.
    """
    from sisyphus_db.ann.search import search
    from sisyphus_db.errors import AnnIndexError
    from sisyphus_db.search.indexing import load_faiss_index
    from sisyphus_db.search.refine_sidecar import load_refine

    index = load_faiss_index(record) if index is None else index
    store = load_refine(record)
    if store is None:
        raise AnnIndexError("this faiss index has no refine vectors: rebuild it with `sisyphus index build`")
    depth = max(k, depth or int(record.params.get("rerank_k") or k))
    nprobe = nprobe or record.params.get("nprobe")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    out_d = np.empty((q.shape[0], k), dtype=np.float32)
    out_i = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], batch_size):
        block = q[start:start + batch_size]
        _, cand = search(index, block, min(depth, int(index.ntotal)), nprobe=nprobe)
        out_d[start:start + block.shape[0]], out_i[start:start + block.shape[0]] = store.rerank(block, cand, k)
    return out_d, out_i


def _slices(depth: int, wanted: int, rate: float | None = None) -> list[tuple[int, int]]:
    """Consecutive slices of the `depth` nearest candidates, then 5x larger each.

    The first holds `wanted` passing frames with about 97 % probability at the filter's pass
    `rate` (3.3 x wanted at 50 %, 16 x at 10 %), or FIRST_SLICE x wanted when it is unknown.
    """
    first = FIRST_SLICE * wanted if rate is None else math.ceil((wanted + 2 * math.sqrt(wanted)) / max(rate, 1e-6))
    out: list[tuple[int, int]] = []
    start, stop = 0, min(depth, max(wanted, first))
    while start < depth:
        out.append((start, stop))
        start, stop = stop, min(depth, stop * 5)
    return out


def _widen(index: Any, nprobe: int | None, fraction: float) -> int | None:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or nprobe is None:
        return None
    return int(min(ivf.nlist, math.ceil(nprobe / max(fraction, 1e-6))))
