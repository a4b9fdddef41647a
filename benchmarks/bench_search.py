"""faiss IVF-PQ sidecar vs pgvector HNSW vs exact search, on the same data in one run.

    python benchmarks/bench_search.py [--sizes 100000,1000000] [--dim 256]

For each size: synthetic clustered unit vectors (sisyphus_db.ann.synthetic) are stored
as frames + embeddings with binary COPY in a fresh database (an embedded server in a
temporary home, or SISYPHUS_DATABASE_URL), 100 sources tagged so that filters select
1 %, 10 % and 50 % of the frames, and held-out queries drawn from the same clusters.
Then, per backend: build time, recall@10 after exact rerank, single-query latency
p50/p95 (through sisyphus_db.search.engine.search and through the raw backend), batch
queries/s, filtered recall and latency at each selectivity, and k-NN graph time.
Ground truth is brute force over the vectors as stored (halfvec) in numpy.
Results: benchmarks/results/search-<size>.json and benchmarks/results/search.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from sqlalchemy.engine import make_url

from sisyphus_db.ann.search import exact_search
from sisyphus_db.ann.search import search as ann_search
from sisyphus_db.ann.synthetic import clustered_vectors
from sisyphus_db.config import Settings
from sisyphus_db.db import migrate
from sisyphus_db.db.database import Database, libpq_url, open_database
from sisyphus_db.search.backends import exact_neighbours, faiss_neighbours, pgvector_neighbours
from sisyphus_db.search.engine import SearchRequest
from sisyphus_db.search.engine import search as engine_search
from sisyphus_db.search.indexing import build_faiss_index, load_faiss_index
from sisyphus_db.search.pgvector_index import build_pgvector_index
from sisyphus_db.search.knn_graph import build_knn_graph
from sisyphus_db.search.queries import Query
from sisyphus_db.store.indexes import IndexRecord, find_index
from sisyphus_db.store.registry import StoredModel, register_model, upsert_source
from sisyphus_db.store.vectors import model_vectors, vectors_by_id

logger = logging.getLogger("bench_search")

RESULTS = Path(__file__).parent / "results"
N_SOURCES = 100
SELECTIVITY = {"1%": ("oslo", 0.01), "10%": ("paris", 0.10), "50%": ("berlin", 0.50)}
K = 10


def city_of(source: int) -> str:
    share = source / N_SOURCES
    return "oslo" if share < 0.01 else "paris" if share < 0.11 else "berlin" if share < 0.61 else "rome"


def where_for(city: str) -> str:
    return f"sources.tags->>'city' = '{city}'"


# ---- data ---------------------------------------------------------------------------------------


def halfvec_copy_rows(frame_ids: npt.NDArray[np.int64], model_id: int, vectors: npt.NDArray[np.float32]) -> bytes:
    """Rows of `COPY embeddings (frame_id, model_id, vec) FROM STDIN (FORMAT BINARY)`, built in numpy.

    Per row: int16 field count, then (int32 length, value) for bigint, integer and halfvec;
    pgvector's halfvec binary form is int16 dim, int16 unused, dim big-endian float16.
    """
    n, d = vectors.shape
    row = np.dtype([("fields", ">i2"), ("len_id", ">i4"), ("id", ">i8"), ("len_model", ">i4"), ("model", ">i4"),
                    ("len_vec", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f2", (d,))])
    out = np.empty(n, dtype=row)
    out["fields"], out["len_id"], out["id"] = 3, 8, frame_ids
    out["len_model"], out["model"] = 4, model_id
    out["len_vec"], out["dim"], out["unused"], out["vec"] = 4 + 2 * d, d, 0, vectors
    return out.tobytes()


def load_corpus(db: Database, vectors: npt.NDArray[np.float32], dim: int) -> tuple[StoredModel, npt.NDArray[np.int64],
                                                                                npt.NDArray[np.int64]]:
    """Sources, frames and embeddings by COPY; returns the model, frame ids and each frame's source number."""
    n = vectors.shape[0]
    model = register_model(db, name=f"bench-{dim}", dim=dim, weights_sha256="0" * 64, pooling="avg",
                           preprocessing={})
    source_ids = [upsert_source(db, uri=f"/bench/video-{s:03d}.mp4", kind="video",
                                tags={"city": city_of(s), "number": str(s)}).id for s in range(N_SOURCES)]
    source_number = (np.arange(n) * N_SOURCES // n).astype(np.int64)
    with db.copy_connection() as conn:
        with conn.cursor().copy("COPY frames (source_id, frame_index, pts_seconds, path, width, height, sha256, "
                                "keyframe_method) FROM STDIN") as copy:
            for start in range(0, n, 100_000):
                stop = min(n, start + 100_000)
                copy.write("".join(
                    f"{source_ids[source_number[i]]}\t{i}\t{i / 25:.2f}\t/bench/frames/{i:08d}.jpg\t224\t224\t"
                    f"{i:064x}\tfps\n" for i in range(start, stop)))
        ids = np.fromiter((r[0] for r in conn.execute(
            "SELECT id FROM frames WHERE path LIKE '/bench/frames/%' ORDER BY frame_index")), dtype=np.int64, count=n)
        header = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
        with conn.cursor().copy("COPY embeddings (frame_id, model_id, vec) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(header)
            for start in range(0, n, 50_000):
                copy.write(halfvec_copy_rows(ids[start:start + 50_000], model.id, vectors[start:start + 50_000]))
            copy.write((-1).to_bytes(2, "big", signed=True))
    with psycopg.connect(libpq_url(db.url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE frames")
        conn.execute("VACUUM ANALYZE embeddings")
        conn.execute("VACUUM ANALYZE sources")
    return model, ids, source_number


# ---- measuring ----------------------------------------------------------------------------------


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(samples_ms, dtype=np.float64)
    return {"p50_ms": round(float(np.percentile(values, 50)), 3), "p95_ms": round(float(np.percentile(values, 95)), 3),
            "n": int(values.size)}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - started) * 1000.0


def recall(found: Sequence[int], truth: Sequence[int]) -> float:
    truth = [t for t in truth if t >= 0][:K]
    return len(set(list(found)[:K]) & set(truth)) / max(1, len(truth))


@dataclass
class World:
    db: Database
    model: StoredModel
    ids: npt.NDArray[np.int64]
    stored: npt.NDArray[np.float32]  # as read back from PostgreSQL (halfvec precision)
    queries: npt.NDArray[np.float32]
    cities: npt.NDArray[np.str_]  # per stored row

    def truth(self, queries: npt.NDArray[np.float32], city: str | None = None) -> npt.NDArray[np.int64]:
        mask = np.ones(self.ids.size, bool) if city is None else self.cities == city
        _, found = exact_search(self.stored[mask], self.ids[mask], queries, K)
        return found


def search_once(world: World, query: npt.NDArray[np.float32], backend: str, where: str | None = None) -> list[int]:
    outcome = engine_search(world.db, world.model, Query(query, {"kind": "vector"}),
                            SearchRequest(k=K, backend=backend, where=where, save=False))
    return [hit.frame_id for hit in outcome.hits]


def measure_engine(world: World, backend: str, queries: npt.NDArray[np.float32], truth: npt.NDArray[np.int64],
                   where: str | None = None) -> dict[str, Any]:
    search_once(world, queries[0], backend, where)  # warm: index file loaded, plans cached
    latencies, recalls = [], []
    for q, t in zip(queries, truth, strict=True):
        found, ms = timed(lambda q=q: search_once(world, q, backend, where))
        latencies.append(ms)
        recalls.append(recall(found, t.tolist()))
    return {"recall_at_10": round(float(np.mean(recalls)), 4), **percentiles(latencies)}


def raw_latency(world: World, backend: str, record: IndexRecord | None, queries: npt.NDArray[np.float32]) -> dict[str, Any]:
    """The backend alone: no planning, no metadata join (faiss: ANN + fetch + exact rerank)."""
    def one(q: npt.NDArray[np.float32]) -> Any:
        if backend == "faiss":
            assert record is not None
            return faiss_neighbours(world.db, world.model, record, q, int(record.params["rerank_k"]),
                                    nprobe=None, frame_filter=None)
        if backend == "pgvector":
            assert record is not None
            return pgvector_neighbours(world.db, world.model, q, K, ef_search=int(record.params["ef_search"]))
        return exact_neighbours(world.db, world.model, q, K)

    one(queries[0])
    return percentiles([timed(lambda q=q: one(q))[1] for q in queries])


def faiss_batch(world: World, record: IndexRecord, queries: npt.NDArray[np.float32],
                truth: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Batched ANN search, then one fetch of every candidate's vector from PostgreSQL and exact rerank."""
    index = load_faiss_index(record)
    nprobe, depth = record.params.get("nprobe"), int(record.params["rerank_k"])
    started = time.perf_counter()
    _, cand = ann_search(index, queries, depth, nprobe=nprobe)
    ann_seconds = time.perf_counter() - started
    ids, vectors = vectors_by_id(world.db, world.model.id, world.model.dim, np.unique(cand[cand >= 0]))
    fetch_seconds = time.perf_counter() - started - ann_seconds
    order = np.argsort(ids)
    rows = order[np.clip(np.searchsorted(ids[order], cand), 0, ids.size - 1)]
    valid = (cand >= 0) & (ids[rows] == cand)
    sims = np.where(valid, np.einsum("qkd,qd->qk", vectors[rows], queries), -np.inf)
    top = np.argsort(-sims, axis=1)[:, :K]
    found = np.take_along_axis(cand, top, axis=1)
    seconds = time.perf_counter() - started
    recalls = [recall(f.tolist(), t.tolist()) for f, t in zip(found, truth, strict=True)]
    return {"queries": int(queries.shape[0]), "seconds": round(seconds, 3), "qps": round(queries.shape[0] / seconds, 1),
            "ann_seconds": round(ann_seconds, 3), "fetch_rerank_seconds": round(seconds - ann_seconds, 3),
            "fetch_seconds": round(fetch_seconds, 3), "recall_at_10": round(float(np.mean(recalls)), 4),
            "nprobe": nprobe, "rerank_k": depth}


def sequential_batch(world: World, backend: str, record: IndexRecord | None, queries: npt.NDArray[np.float32],
                     truth: npt.NDArray[np.int64]) -> dict[str, Any]:
    """One query after another over one connection (what SQL offers for bulk search)."""
    started = time.perf_counter()
    recalls = []
    for q, t in zip(queries, truth, strict=True):
        if backend == "pgvector":
            assert record is not None
            found, _ = pgvector_neighbours(world.db, world.model, q, K, ef_search=int(record.params["ef_search"]))
        else:
            found, _ = exact_neighbours(world.db, world.model, q, K)
        recalls.append(recall(found.tolist(), t.tolist()))
    seconds = time.perf_counter() - started
    return {"queries": int(queries.shape[0]), "seconds": round(seconds, 3), "qps": round(queries.shape[0] / seconds, 2),
            "recall_at_10": round(float(np.mean(recalls)), 4)}


class BuildWatch:
    """Watches an HNSW CREATE INDEX; past the budget it records progress and cancels it."""

    def __init__(self, url: str, budget_s: float) -> None:
        self.url, self.budget_s = url, budget_s
        self.stop = threading.Event()
        self.cancelled_at: dict[str, float] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.perf_counter()
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.wait(5.0):
                if time.perf_counter() - started < self.budget_s:
                    continue
                row = conn.execute("SELECT pid, phase, tuples_done, tuples_total, blocks_done, blocks_total "
                                   "FROM pg_stat_progress_create_index").fetchone()
                if row is None:
                    continue
                pid, phase, tuples_done, tuples_total, blocks_done, blocks_total = row
                self.cancelled_at = {"elapsed_s": time.perf_counter() - started, "tuples_done": tuples_done,
                                     "tuples_total": tuples_total, "blocks_done": blocks_done,
                                     "blocks_total": blocks_total, "phase": phase}
                conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
                return

    def __enter__(self) -> BuildWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


# ---- one size -------------------------------------------------------------------------------


def run_size(db: Database, n: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "dim": dim}
    t0 = time.perf_counter()
    data = clustered_vectors(n + args.queries_total, dim, seed=args.seed)
    queries, base = data[n:], data[:n]
    model, _, source_number = load_corpus(db, base, dim)
    out["load_seconds"] = round(time.perf_counter() - t0, 1)
    read_started = time.perf_counter()
    ids, stored = model_vectors(db, model.id, dim)
    out["read_vectors_seconds"] = round(time.perf_counter() - read_started, 2)
    cities = np.array([city_of(int(s)) for s in range(N_SOURCES)])[source_number]
    world = World(db, model, ids, stored, queries, cities)
    logger.info("n=%d loaded in %.0f s", n, out["load_seconds"])

    q_recall = queries[: args.queries]
    truth = world.truth(q_recall)
    q_batch = queries[: args.batch_queries]
    batch_truth = world.truth(q_batch)
    backends: dict[str, Any] = {}

    # faiss: an explicit IVF-PQ, and what `auto` chooses.
    factories = {"faiss-ivfpq": args.factory or None, "faiss-auto": "auto"}
    for name, factory in factories.items():
        if factory is None:
            from sisyphus_db.ann.factory import legal_pq_m, nlist_for

            m = max(p for p in legal_pq_m(dim) if p <= 64 and dim // p >= 8)
            factory = f"IVF{nlist_for(n)},PQ{m}"
        logger.info("building faiss %s", factory)
        report = build_faiss_index(db, model, factory=factory, target_recall=args.target_recall)
        record = report.record
        if name == "faiss-auto" and record.factory == backends.get("faiss-ivfpq", {}).get("factory"):
            backends[name] = {"factory": record.factory, "same_as": "faiss-ivfpq"}
            continue
        entry: dict[str, Any] = {
            "factory": record.factory, "build_seconds": round(report.seconds, 2),
            "tune_seconds": record.params.get("tune_seconds"), "tuned": {k: record.params.get(k) for k in (
                "nprobe", "rerank_k")}, "tuned_recall_at_10": record.recall_at_10,
            "file_mb": round(Path(str(record.path)).stat().st_size / 1e6, 1),
        }
        logger.info("faiss %s built in %.1f s; measuring", record.factory, report.seconds)
        entry["search"] = measure_engine(world, "faiss", q_recall, truth)
        entry["raw"] = raw_latency(world, "faiss", record, q_recall[:100])
        entry["batch"] = faiss_batch(world, record, q_batch, batch_truth)
        entry["filtered"] = {}
        for label, (city, _) in SELECTIVITY.items():
            qf = queries[: args.filtered_queries]
            entry["filtered"][label] = measure_engine(world, "faiss", qf, world.truth(qf, city), where_for(city))
            probe = engine_search(db, model, Query(qf[0], {}), SearchRequest(k=K, where=where_for(city), save=False))
            entry["filtered"][label]["strategy"] = probe.params.get("strategy")
        knn = build_knn_graph(db, model, k=K)
        entry["knn_graph"] = {**knn.to_json(), "method": "faiss batched search of every frame + COPY of the edges"}
        backends[name] = entry

    # pgvector HNSW
    entry = {}
    budget = args.pgvector_budget
    logger.info("building pgvector HNSW (budget %.0f s)", budget)
    started = time.perf_counter()
    try:
        with BuildWatch(libpq_url(db.url), budget) as watch:
            report = build_pgvector_index(db, model, target_recall=args.target_recall)
        record = report.record
        entry.update({"factory": record.factory, "build_seconds": round(report.seconds, 2),
                      "index_seconds": record.params.get("index_seconds"), "tuned": {"ef_search":
                      record.params.get("ef_search")}, "tuned_recall_at_10": record.recall_at_10})
    except Exception as exc:  # noqa: BLE001 - a build cancelled by the watch is reported, not fatal
        progress = watch.cancelled_at
        if progress is None:
            raise
        done = progress["tuples_done"] or 0
        elapsed = progress["elapsed_s"]
        entry.update({"factory": "HNSW(m=16,ef_construction=64)", "build_completed": False,
                      "cancelled_after_seconds": round(elapsed, 1), "progress": progress,
                      "index_seconds_extrapolated": round(elapsed * n / done, 1) if done else None,
                      "note": f"cancelled after the {budget:.0f} s budget ({type(exc).__name__}); the build time is "
                              "linear extrapolation from tuples inserted so far (HNSW inserts get slower as the "
                              "graph grows, so this underestimates)"})
        record = None
    logger.info("pgvector step took %.0f s", time.perf_counter() - started)
    if record is not None:
        entry["search"] = measure_engine(world, "pgvector", q_recall, truth)
        entry["raw"] = raw_latency(world, "pgvector", record, q_recall[:100])
        entry["batch"] = sequential_batch(world, "pgvector", record, q_batch[: args.pgvector_batch],
                                          batch_truth[: args.pgvector_batch])
        entry["filtered"] = {}
        for label, (city, _) in SELECTIVITY.items():
            qf = queries[: args.filtered_queries]
            entry["filtered"][label] = measure_engine(world, "pgvector", qf, world.truth(qf, city), where_for(city))
        per_query = entry["batch"]["seconds"] / entry["batch"]["queries"]
        entry["knn_graph"] = {"seconds_extrapolated": round(per_query * n, 1),
                              "method": f"{n} sequential k=10 queries at the measured batch rate (not run)"}
    backends["pgvector-hnsw"] = entry

    # exact (sequential scan in PostgreSQL)
    qe = queries[: args.exact_queries]
    entry = {"build_seconds": 0.0, "search": measure_engine(world, "exact", qe, world.truth(qe)),
             "raw": raw_latency(world, "exact", None, qe)}
    entry["batch"] = sequential_batch(world, "exact", None, qe, world.truth(qe))
    entry["filtered"] = {label: measure_engine(world, "exact", qe, world.truth(qe, city), where_for(city))
                         for label, (city, _) in SELECTIVITY.items()}
    entry["knn_graph"] = {"seconds_extrapolated": round(entry["batch"]["seconds"] / entry["batch"]["queries"] * n, 1),
                          "method": f"{n} sequential exact queries at the measured rate (not run)"}
    numpy_started = time.perf_counter()
    exact_search(stored, ids, stored[: min(n, 20_000)], K + 1)
    entry["knn_graph"]["numpy_bruteforce_seconds_extrapolated"] = round(
        (time.perf_counter() - numpy_started) * n / min(n, 20_000), 1)
    backends["exact"] = entry
    out["backends"] = backends
    out["ratios"] = ratios(backends)
    return out


def ratios(backends: dict[str, Any]) -> dict[str, Any]:
    faiss, pg = backends.get("faiss-ivfpq", {}), backends.get("pgvector-hnsw", {})
    out: dict[str, Any] = {}
    pg_build = pg.get("build_seconds") or pg.get("index_seconds_extrapolated")
    pg_index = pg.get("index_seconds") or pg.get("index_seconds_extrapolated")
    if faiss.get("build_seconds") and pg_build:
        out["build_pgvector_over_faiss"] = round(pg_build / faiss["build_seconds"], 2)
    if faiss.get("build_seconds") and pg_index:
        out["build_pgvector_index_only_over_faiss"] = round(pg_index / faiss["build_seconds"], 2)
    if faiss.get("batch") and pg.get("batch"):
        out["bulk_qps_faiss_over_pgvector"] = round(faiss["batch"]["qps"] / pg["batch"]["qps"], 1)
    if faiss.get("knn_graph") and pg.get("knn_graph"):
        out["knn_graph_pgvector_over_faiss"] = round(pg["knn_graph"]["seconds_extrapolated"]
                                                     / faiss["knn_graph"]["seconds"], 1)
    return out


# ---- report -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import faiss

    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gb, 1), "python": platform.python_version(),
            "faiss": faiss.__version__, "platform": platform.platform()}


def markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = ["# Search benchmark: faiss sidecar vs pgvector HNSW vs exact", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, no GPU; Python {info['python']}, "
             f"faiss {info['faiss']}, {info.get('postgres', '')}.", "",
             "Data: `clustered_vectors` (log-normal cluster sizes, spread 0.6), stored as halfvec; 100 sources whose "
             "`city` tag selects 1 %, 10 %, 50 % of the frames. Recall@10 is against brute force over the stored "
             "vectors, on held-out queries, after exact rerank with vectors fetched from PostgreSQL. Latency is "
             "wall time of one `engine.search` (planning, ANN, rerank, metadata join; not saved) and of the raw "
             "backend call. faiss batch = one batched ANN search + one fetch of all candidate vectors + rerank; "
             "pgvector/exact batch = sequential queries over one connection.", ""]
    for r in results:
        lines += [f"## {r['n']:,} vectors x {r['dim']}-d", "",
                  f"load (COPY) {r['load_seconds']} s, read back all vectors {r['read_vectors_seconds']} s", "",
                  "| backend | index | build s | recall@10 | p50 ms | p95 ms | raw p50/p95 ms | batch q/s (recall) "
                  "| k-NN graph s |", "|---|---|---|---|---|---|---|---|---|"]
        for name, b in r["backends"].items():
            if "same_as" in b:
                lines.append(f"| {name} | {b['factory']} | same as {b['same_as']} | | | | | | |")
                continue
            search, raw, batch = b.get("search", {}), b.get("raw", {}), b.get("batch", {})
            build = b.get("build_seconds")
            if build is None and b.get("index_seconds_extrapolated"):
                build = f"~{b['index_seconds_extrapolated']} (extrapolated, cancelled at {b['cancelled_after_seconds']})"
            elif name == "pgvector-hnsw":
                build = f"{build} (index {b.get('index_seconds')})"
            knn = b.get("knn_graph", {})
            knn_text = knn.get("seconds", None)
            if knn_text is None and knn.get("seconds_extrapolated") is not None:
                knn_text = f"~{knn['seconds_extrapolated']} (extrapolated)"
            lines.append(
                f"| {name} | {b.get('factory', 'seq scan')} | {build} | {search.get('recall_at_10', '-')} | "
                f"{search.get('p50_ms', '-')} | {search.get('p95_ms', '-')} | {raw.get('p50_ms', '-')}/"
                f"{raw.get('p95_ms', '-')} | {batch.get('qps', '-')} ({batch.get('recall_at_10', '-')}) | "
                f"{knn_text if knn_text is not None else '-'} |")
        lines += ["", "Filtered (recall@10 vs exact filtered; p50/p95 ms; faiss plan):", "",
                  "| backend | 1 % | 10 % | 50 % |", "|---|---|---|---|"]
        for name, b in r["backends"].items():
            if "filtered" not in b:
                continue
            cells = []
            for label in SELECTIVITY:
                f = b["filtered"][label]
                plan = f" {f['strategy']}" if f.get("strategy") else ""
                cells.append(f"{f['recall_at_10']} / {f['p50_ms']} / {f['p95_ms']}{plan}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Ratios: " + ", ".join(f"{k} = {v}" for k, v in r["ratios"].items()), ""]
        for name, b in r["backends"].items():
            if b.get("note"):
                lines += [f"Note ({name}): {b['note']}", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--factory", default=None, help="faiss IVF-PQ factory (default IVF{4 sqrt n},PQ{d/8 <= 64})")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--queries", type=int, default=200, help="held-out queries for recall and latency")
    parser.add_argument("--batch-queries", type=int, default=2000, help="faiss batch size")
    parser.add_argument("--pgvector-batch", type=int, default=500, help="sequential pgvector queries for q/s")
    parser.add_argument("--filtered-queries", type=int, default=50)
    parser.add_argument("--exact-queries", type=int, default=10)
    parser.add_argument("--pgvector-budget", type=float, default=1500.0,
                        help="seconds before an HNSW build is cancelled and extrapolated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.queries_total = max(args.queries, args.batch_queries, args.filtered_queries, args.exact_queries)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("sisyphus_db").setLevel(logging.WARNING)

    external = os.environ.get("SISYPHUS_DATABASE_URL")
    home = Path(tempfile.mkdtemp(prefix="sisyphus-bench-"))
    server = None
    if external is None:
        from sisyphus_db.db.embedded import EmbeddedServer

        server = EmbeddedServer(home)
        server.start()
    info = machine()
    results = []
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            name = f"bench_{n}"
            admin_url = libpq_url(external) if external else server.socket_url("postgres")  # type: ignore[union-attr]
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}"')
                info["postgres"] = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]  # type: ignore[index]
            url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
            db = open_database(Settings(home=home, database_url=url), require_schema=False)
            migrate.upgrade(db)
            with db.transaction() as conn:
                info["pgvector"] = conn.exec_driver_sql(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'").scalar()
            try:
                result = run_size(db, n, args.dim, args)
            finally:
                db.dispose()
            result["machine"] = info
            (args.out / f"search-{n}.json").write_text(json.dumps(result, indent=2) + "\n")
            results.append(result)
            logger.info("n=%d: %s", n, json.dumps(result["ratios"]))
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        existing = sorted(args.out.glob("search-*.json"), key=lambda p: int(p.stem.split("-")[1]))
        all_results = [json.loads(p.read_text()) for p in existing]
        (args.out / "search.md").write_text(markdown(all_results, info))
        print(markdown(results, info))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
