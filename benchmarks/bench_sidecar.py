"""The faiss sidecar at full speed vs pgvector HNSW, side by side in one run.

    python benchmarks/bench_sidecar.py [--sizes 100000,1000000] [--dim 128]
    python benchmarks/bench_sidecar.py --model NAME   # on embeddings already in the database
                                                      # (e.g. `sisyphus import-embeddings`), SISYPHUS_DATABASE_URL

Per size: clustered synthetic vectors (sisyphus_db.ann.synthetic) stored by binary COPY
in a fresh database (bench_search.load_corpus: 100 sources tagged so that filters select
1 %, 10 %, 50 %), and held-out queries from the same clusters, split in two: a tuning set
(faiss nprobe/rerank depth and pgvector ef_search are both raised on it until recall@10
reaches the target) and a measuring set. Measured:
- build: faiss (read vectors, train, add, tune, write index + refine store) vs HNSW;
- bulk: sidecar batched ANN + in-memory rerank (search.faiss_plans.bulk_neighbours) vs
  pgvector sequential queries over one connection, both at the tuned setting (the median
  of several passes each);
- single query: engine.search (plan, ANN, rerank, metadata join) p50/p95 for both;
- filtered at 1/10/50 %: the planner's choice through engine.search, warm (it knows the
  filter's pass rate from earlier searches) and cold, against pgvector's iterative scan
  (relaxed_order) through engine.search (the same contract: k hits with metadata) at the
  tuned ef_search and at others, interleaved query by query; one level down, the planner's
  neighbours against pgvector's query alone, interleaved too; every faiss plan forced;
- k-NN graph k=10 of every frame stored in knn_edges;
- opening the index: read_index copied vs memory-mapped.
Results: benchmarks/results/sidecar-<n>.json and sidecar.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import (  # noqa: E402
    K, SELECTIVITY, BuildWatch, World, city_of, load_corpus, machine, percentiles, recall, timed, where_for,
)

from sisyphus_db.ann.synthetic import clustered_vectors  # noqa: E402
from sisyphus_db.config import Settings  # noqa: E402
from sisyphus_db.db import migrate  # noqa: E402
from sisyphus_db.db.database import Database, libpq_url, open_database  # noqa: E402
from sisyphus_db.search.backends import pgvector_neighbours  # noqa: E402
from sisyphus_db.search.engine import SearchRequest  # noqa: E402
from sisyphus_db.search.engine import search as engine_search  # noqa: E402
from sisyphus_db.search.faiss_plans import PLANS, bulk_neighbours, faiss_neighbours  # noqa: E402
from sisyphus_db.search.filters import FrameFilter  # noqa: E402
from sisyphus_db.search.indexing import build_faiss_index, load_faiss_index  # noqa: E402
from sisyphus_db.search.pgvector_index import build_pgvector_index  # noqa: E402
from sisyphus_db.search.pass_rates import PASS_RATES  # noqa: E402
from sisyphus_db.search.knn_graph import build_knn_graph  # noqa: E402
from sisyphus_db.search.queries import Query  # noqa: E402
from sisyphus_db.store.indexes import IndexRecord  # noqa: E402
from sisyphus_db.store.registry import StoredModel, find_model  # noqa: E402
from sisyphus_db.store.vectors import model_vectors  # noqa: E402

logger = logging.getLogger("bench_sidecar")
RESULTS = Path(__file__).parent / "results"
EF_STEPS = (40, 80, 120, 160, 240, 320, 480, 640, 1000)


def mean_recall(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64]) -> float:
    return float(np.mean([recall(f.tolist(), t.tolist()) for f, t in zip(found, truth, strict=True)]))


BULK_REPEATS = 5  # a pass over 2,000 queries takes a fraction of a second: the median of several


def faiss_bulk(record: IndexRecord, queries: npt.NDArray[np.float32], truth: npt.NDArray[np.int64], *,
               nprobe: int | None, depth: int) -> dict[str, Any]:
    bulk_neighbours(record, queries[:50], K, nprobe=nprobe, depth=depth)  # warm: files mapped, pages in
    passes = []
    for _ in range(BULK_REPEATS):
        started = time.perf_counter()
        _, found = bulk_neighbours(record, queries, K, nprobe=nprobe, depth=depth)
        passes.append(time.perf_counter() - started)
    seconds = float(np.median(passes))
    return {"queries": int(queries.shape[0]), "seconds": round(seconds, 3), "qps": round(queries.shape[0] / seconds, 1),
            "passes_seconds": [round(x, 3) for x in passes],
            "recall_at_10": round(mean_recall(found, truth), 4), "nprobe": nprobe, "rerank_k": depth}


def tune_faiss_held_out(record: IndexRecord, queries: npt.NDArray[np.float32], truth: npt.NDArray[np.int64],
                        target: float) -> tuple[int | None, int, list[dict[str, Any]]]:
    """Cheapest (nprobe, depth) from the build's setting upwards whose held-out recall reaches the target."""
    base_np = record.params.get("nprobe")
    base_depth = int(record.params.get("rerank_k") or K)
    table = []
    grid = [(base_np, base_depth)]
    if base_np is not None:
        grid += [(base_np, base_depth * 2), (base_np * 2, base_depth), (base_np * 2, base_depth * 2),
                 (base_np * 4, base_depth * 2), (base_np * 4, base_depth * 4), (base_np * 8, base_depth * 4)]
    for nprobe, depth in grid:
        _, found = bulk_neighbours(record, queries, K, nprobe=nprobe, depth=depth)
        r = mean_recall(found, truth)
        table.append({"nprobe": nprobe, "rerank_k": depth, "recall_at_10": round(r, 4)})
        if r >= target:
            return nprobe, depth, table
    return grid[-1][0], grid[-1][1], table


def pg_recall_at(world: World, ef: int, queries: npt.NDArray[np.float32], truth: npt.NDArray[np.int64],
                 where: str | None = None) -> tuple[float, list[float]]:
    latencies, recalls = [], []
    for q, t in zip(queries, truth, strict=True):
        (found, _), ms = timed(lambda q=q: pgvector_neighbours(world.db, world.model, q, K, ef_search=ef, where=where))
        latencies.append(ms)
        recalls.append(recall(found.tolist(), t.tolist()))
    return float(np.mean(recalls)), latencies


def tune_pg_held_out(world: World, queries: npt.NDArray[np.float32], truth: npt.NDArray[np.int64],
                     target: float) -> tuple[int, list[dict[str, Any]]]:
    table = []
    for ef in EF_STEPS:
        r, _ = pg_recall_at(world, ef, queries, truth)
        table.append({"ef_search": ef, "recall_at_10": round(r, 4)})
        if r >= target:
            return ef, table
    return EF_STEPS[-1], table


def single_queries(world: World, backend: str, queries: npt.NDArray[np.float32], truth: npt.NDArray[np.int64],
                   **request: Any) -> dict[str, Any]:
    """engine.search one query at a time: recall@10 and latency percentiles."""
    return engine_rows(world, queries, truth, {"one": {"backend": backend, **request}})["one"]


def engine_rows(world: World, queries: npt.NDArray[np.float32], truth: npt.NDArray[np.int64],
                configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """engine.search per configuration (SearchRequest fields; `cold`: the planner forgets the
    filter's pass rate before each query), interleaved (see `interleaved`)."""
    def runner(config: dict[str, Any]) -> Callable[[npt.NDArray[np.float32]], list[int]]:
        request = dict(config)
        cold = request.pop("cold", False)

        def one(q: npt.NDArray[np.float32]) -> list[int]:
            if cold:
                PASS_RATES.clear()
            outcome = engine_search(world.db, world.model, Query(q, {"kind": "vector"}),
                                    SearchRequest(k=K, save=False, **request))
            return [hit.frame_id for hit in outcome.hits]
        return one

    return interleaved(queries, truth, {name: runner(config) for name, config in configs.items()})


def interleaved(queries: npt.NDArray[np.float32], truth: npt.NDArray[np.int64],
                runs: dict[str, Callable[[npt.NDArray[np.float32]], list[int]]]) -> dict[str, dict[str, Any]]:
    """recall@10 and latency of each way to answer a query, interleaved: each query runs
    through every one in turn, in a rotating order, so a burst of load on the shared machine
    falls on all of them alike."""
    names = list(runs)
    for name in names:
        runs[name](queries[0])
    latencies: dict[str, list[float]] = {name: [] for name in names}
    recalls: dict[str, list[float]] = {name: [] for name in names}
    for turn, (q, t) in enumerate(zip(queries, truth, strict=True)):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            found, ms = timed(lambda q=q, name=name: runs[name](q))
            latencies[name].append(ms)
            recalls[name].append(recall(found, t.tolist()))
    return {name: {"recall_at_10": round(float(np.mean(recalls[name])), 4), **percentiles(latencies[name])}
            for name in names}


def filtered(world: World, record: IndexRecord, queries: npt.NDArray[np.float32], pg_ef: int | None,
             nprobe: int | None, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, (city, _) in SELECTIVITY.items():
        where = where_for(city)
        truth = world.truth(queries, city)
        # The planner warm (it knows the filter's pass rate from earlier searches) and cold, and
        # pgvector through the same engine.search (registry read, search, metadata join).
        configs: dict[str, dict[str, Any]] = {
            "planner": {"backend": "faiss", "where": where, "nprobe": nprobe},
            "planner_cold": {"backend": "faiss", "where": where, "nprobe": nprobe, "cold": True}}
        efs = sorted({pg_ef, 40, min(1000, max(pg_ef * 2, 80))}) if pg_ef is not None else []
        configs.update({f"pgvector_engine_ef{ef}": {"backend": "pgvector", "where": where, "ef_search": ef}
                        for ef in efs})
        row: dict[str, Any] = engine_rows(world, queries, truth, configs)
        probe = engine_search(world.db, world.model, Query(queries[0], {}),
                              SearchRequest(k=K, where=where, save=False, nprobe=nprobe))
        row["planner"]["strategy"] = probe.params.get("strategy")

        # One level down, without the engine: the planner's neighbours for k (ids, distances, and
        # for broad filters the metadata) against pgvector's query alone (ids and distances).
        def planner_ids(q: npt.NDArray[np.float32], where: str = where) -> list[int]:
            (ids, _), _info = faiss_neighbours(world.db, world.model, record, q, depth, nprobe=nprobe,
                                               frame_filter=FrameFilter(world.db, where, world.model.id), wanted=K)
            return ids[:K].tolist()

        def pg_ids(ef: int, where: str = where) -> Callable[[npt.NDArray[np.float32]], list[int]]:
            return lambda q: pgvector_neighbours(world.db, world.model, q, K, ef_search=ef, where=where)[0].tolist()

        row.update(interleaved(queries, truth, {"planner_ids": planner_ids,
                                                **{f"pgvector_ef{ef}": pg_ids(ef) for ef in efs}}))
        for plan in PLANS:  # each plan forced (no k: the filter-candidates plan checks all its candidates)
            latencies, recalls = [], []
            for q, t in zip(queries, truth, strict=True):
                def run(q: npt.NDArray[np.float32] = q) -> Any:
                    return faiss_neighbours(world.db, world.model, record, q, depth, nprobe=nprobe,
                                            frame_filter=FrameFilter(world.db, where, world.model.id), plan=plan)
                ((ids, _), _info), ms = timed(run)
                latencies.append(ms)
                recalls.append(recall(ids[:K].tolist(), t.tolist()))
            row[plan] = {"recall_at_10": round(float(np.mean(recalls)), 4), **percentiles(latencies)}
        out[label] = row
        logger.info("filtered %s: %s", label, json.dumps(row))
    return out


def knn_recall(world: World, model: StoredModel, sample: int = 300) -> float:
    """recall@10 of the stored graph for a sample of frames, against brute force (self excluded)."""
    from sisyphus_db.ann.search import exact_search

    rng = np.random.default_rng(1)
    rows = rng.choice(world.ids.size, size=min(sample, world.ids.size), replace=False)
    _, truth = exact_search(world.stored, world.ids, world.stored[rows], K + 1)
    with world.db.transaction() as conn:
        edges = conn.exec_driver_sql(
            f"SELECT frame_id, neighbor_id FROM knn_edges WHERE model_id = {model.id} AND frame_id IN "
            f"({','.join(str(int(world.ids[r])) for r in rows)})").all()
    got: dict[int, set[int]] = {}
    for a, b in edges:
        got.setdefault(int(a), set()).add(int(b))
    hits = [len(got.get(int(world.ids[r]), set()) & set(t[t != world.ids[r]][:K].tolist())) / K
            for r, t in zip(rows, truth, strict=True)]
    return round(float(np.mean(hits)), 4)


def open_times(record: IndexRecord) -> dict[str, Any]:
    from sisyphus_db.ann.files import read_index

    out = {}
    for mmap in (False, True):
        _, ms = timed(lambda mmap=mmap: read_index(str(record.path), mmap=mmap))
        out["mmap_ms" if mmap else "copy_ms"] = round(ms, 1)
    out["file_mb"] = round(Path(str(record.path)).stat().st_size / 1e6, 1)
    refine = record.params.get("refine") or {}
    if refine:
        out["refine_mb"] = round(Path(refine["vectors_path"]).stat().st_size / 1e6, 1)
    return out


def run_world(world: World, n: int, dim: int, args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    db, model = world.db, world.model
    queries = world.queries
    q_tune, q_meas = queries[:args.tune_queries], queries[args.tune_queries:args.tune_queries + args.batch_queries]
    t_tune, t_meas = world.truth(q_tune), world.truth(q_meas)
    q_single = q_meas[:args.single_queries]
    t_single = t_meas[:args.single_queries]

    from sisyphus_db.ann.factory import legal_pq_m, nlist_for

    m = max(p for p in legal_pq_m(dim) if p <= 64 and dim // p >= 8)
    factory = args.factory or f"IVF{nlist_for(n)},PQ{m}"
    logger.info("building faiss %s", factory)
    report = build_faiss_index(db, model, factory=factory, target_recall=args.target_recall)
    record = report.record
    faiss_entry: dict[str, Any] = {"factory": record.factory, "build_seconds": round(report.seconds, 2),
                                   "build_tuned": {k: record.params.get(k) for k in ("nprobe", "rerank_k")},
                                   "build_tuned_recall_at_10": record.recall_at_10, "open": open_times(record)}
    nprobe, depth, table = tune_faiss_held_out(record, q_tune, t_tune, args.target_recall)
    faiss_entry["held_out_tuning"] = table
    faiss_entry["bulk"] = faiss_bulk(record, q_meas, t_meas, nprobe=nprobe, depth=depth)
    logger.info("faiss bulk %s", faiss_entry["bulk"])
    faiss_entry["single"] = single_queries(world, "faiss", q_single, t_single, nprobe=nprobe)
    logger.info("faiss single %s", faiss_entry["single"])
    out["faiss"] = faiss_entry
    checkpoint(args, out)

    pg_entry: dict[str, Any] = {}
    logger.info("building pgvector HNSW (budget %.0f s)", args.pgvector_budget)
    if args.skip_pgvector:
        pg_entry["note"] = "pgvector not run in this invocation (--skip-pgvector)"
        built = False
    else:
        try:
            with BuildWatch(libpq_url(db.url), args.pgvector_budget) as watch:
                pg_report = build_pgvector_index(db, model, target_recall=args.target_recall)
            pg_entry.update({"factory": pg_report.record.factory, "build_seconds": round(pg_report.seconds, 2),
                             "index_seconds": pg_report.record.params.get("index_seconds")})
            built = True
        except Exception as exc:  # noqa: BLE001 - a build cancelled by the watch is reported, not fatal
            if watch.cancelled_at is None:
                raise
            done = watch.cancelled_at["tuples_done"] or 0
            pg_entry.update({"build_completed": False, "index_seconds_extrapolated":
                             round(watch.cancelled_at["elapsed_s"] * n / done, 1) if done else None,
                             "note": f"cancelled after {args.pgvector_budget:.0f} s ({type(exc).__name__}); linear "
                                     "extrapolation (an underestimate: HNSW inserts slow down as the graph grows)"})
            built = False
    if built:
        ef, ef_table = tune_pg_held_out(world, q_tune[:args.pg_tune_queries], t_tune[:args.pg_tune_queries],
                                        args.target_recall)
        pg_entry["held_out_tuning"] = ef_table
        pg_entry["ef_search"] = ef
        n_pg = args.pgvector_batch
        passes = []
        for _ in range(3):  # the median of three passes, as faiss's of several
            r, latencies = pg_recall_at(world, ef, q_meas[:n_pg], t_meas[:n_pg])
            passes.append(sum(latencies) / 1000.0)
        seconds = float(np.median(passes))
        pg_entry["bulk"] = {"queries": n_pg, "seconds": round(seconds, 3), "qps": round(n_pg / seconds, 1),
                            "passes_seconds": [round(x, 3) for x in passes], "recall_at_10": round(r, 4),
                            "ef_search": ef}
        logger.info("pgvector bulk %s", pg_entry["bulk"])
        pg_entry["single"] = single_queries(world, "pgvector", q_single, t_single, ef_search=ef)
        pg_entry["knn_graph_seconds_extrapolated"] = round(seconds / n_pg * n, 1)
    out["pgvector"] = pg_entry
    out["ratios"] = ratios(faiss_entry, pg_entry)
    checkpoint(args, out)
    faiss_entry["filtered"] = filtered(world, record, q_meas[:args.filtered_queries], pg_entry.get("ef_search"),
                                       nprobe, max(depth, K))
    checkpoint(args, out)
    if not args.skip_knn:
        knn = build_knn_graph(db, model, k=K, nprobe=args.knn_nprobe or nprobe)
        faiss_entry["knn_graph"] = {**knn.to_json(), "nprobe": args.knn_nprobe or nprobe,
                                    "recall_at_10": knn_recall(world, model)}
        logger.info("knn graph %s", faiss_entry["knn_graph"])
    out["ratios"] = ratios(faiss_entry, pg_entry)
    return out


def checkpoint(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """The figures so far (a long run that is stopped still leaves them)."""
    (args.out / f"sidecar-{out['n']}.partial.json").write_text(json.dumps(out, indent=2, default=str) + "\n")


def ratios(f: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pg_build = p.get("index_seconds") or p.get("index_seconds_extrapolated")
    if pg_build:
        out["build_faiss_over_pgvector_index"] = round(f["build_seconds"] / pg_build, 3)
    if p.get("bulk"):
        out["bulk_qps_faiss_over_pgvector"] = round(f["bulk"]["qps"] / p["bulk"]["qps"], 1)
    if p.get("single"):
        out["single_p95_faiss_over_pgvector"] = round(f["single"]["p95_ms"] / p["single"]["p95_ms"], 2)
    if p.get("knn_graph_seconds_extrapolated") and f.get("knn_graph"):
        out["knn_graph_pgvector_over_faiss"] = round(p["knn_graph_seconds_extrapolated"] / f["knn_graph"]["seconds"],
                                                     1)
    return out


def run_size(db: Database, n: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "dim": dim, "data": "clustered_vectors synthetic"}
    t0 = time.perf_counter()
    data = clustered_vectors(n + args.tune_queries + args.batch_queries, dim, seed=args.seed)
    queries, base = data[n:], data[:n]
    model, _, source_number = load_corpus(db, base, dim)
    out["load_seconds"] = round(time.perf_counter() - t0, 1)
    ids, stored = model_vectors(db, model.id, dim)
    cities = np.array([city_of(int(s)) for s in range(100)])[source_number]
    return run_world(World(db, model, ids, stored, queries, cities), n, dim, args, out)


def run_imported(db: Database, model: StoredModel, args: argparse.Namespace) -> dict[str, Any]:
    """On stored (e.g. imported) embeddings: held-out queries are stored frames left out of nothing,
    so their own id is removed from both sides; filters use the sources' `city` tag when present."""
    ids, stored = model_vectors(db, model.id, model.dim)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(ids.size, size=min(ids.size, args.tune_queries + args.batch_queries), replace=False)
    queries = stored[pick]
    with db.transaction() as conn:
        rows = conn.exec_driver_sql(
            "SELECT f.id, coalesce(s.tags->>'city', '') FROM frames f JOIN sources s ON s.id = f.source_id "
            f"JOIN embeddings e ON e.frame_id = f.id AND e.model_id = {model.id} ORDER BY f.id").all()
    cities = np.array([r[1] for r in rows])
    out = {"n": int(ids.size), "dim": model.dim, "data": f"stored model {model.name}"}
    return run_world(World(db, model, ids, stored, queries, cities), int(ids.size), model.dim, args, out)


def markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = ["# The faiss sidecar at full speed vs pgvector HNSW", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, no GPU (GPU figures are out "
             f"of scope of this run); Python {info['python']}, faiss {info['faiss']}, {info.get('postgres', '')}, "
             f"pgvector {info.get('pgvector', '')}. {info.get('note', '')}", "",
             "Recall@10 against brute force over the stored (halfvec) vectors, on held-out queries; faiss nprobe/"
             "rerank depth and pgvector ef_search each raised on a separate held-out tuning set until recall@10 "
             "reaches the target. Bulk: faiss = batched ANN + in-memory float16 rerank; pgvector = sequential "
             "queries over one connection. Single: one engine.search (plan, ANN, rerank, metadata join).", ""]
    for r in results:
        f, p = r["faiss"], r["pgvector"]
        lines += [f"## {r['n']:,} x {r['dim']}-d ({r['data']})", "",
                  f"load {r.get('load_seconds', '-')} s; faiss {f['factory']} build {f['build_seconds']} s "
                  f"(tuned at build {f['build_tuned']}); index open copied {f['open']['copy_ms']} ms vs mmap "
                  f"{f['open']['mmap_ms']} ms ({f['open']['file_mb']} MB index + {f['open'].get('refine_mb')} MB "
                  "refine vectors)", "",
                  "| | faiss sidecar | pgvector HNSW | ratio |", "|---|---|---|---|"]
        pb, fb = p.get("bulk", {}), f["bulk"]
        pg_build = p.get("index_seconds") or (f"~{p['index_seconds_extrapolated']} (extrapolated)"
                                              if p.get("index_seconds_extrapolated") else "not run")
        lines.append(f"| build s | {f['build_seconds']} | {pg_build} | "
                     f"{r['ratios'].get('build_faiss_over_pgvector_index', '-')} |")
        lines.append(f"| bulk q/s (recall@10) | {fb['qps']} ({fb['recall_at_10']}; nprobe {fb['nprobe']}, rerank "
                     f"{fb['rerank_k']}) | {pb.get('qps', '-')} ({pb.get('recall_at_10', '-')}; ef_search "
                     f"{pb.get('ef_search', '-')}) | {r['ratios'].get('bulk_qps_faiss_over_pgvector', '-')}x |")
        fs, ps = f["single"], p.get("single", {})
        lines.append(f"| single p50/p95 ms (recall@10) | {fs['p50_ms']}/{fs['p95_ms']} ({fs['recall_at_10']}) | "
                     f"{ps.get('p50_ms', '-')}/{ps.get('p95_ms', '-')} ({ps.get('recall_at_10', '-')}) | "
                     f"p95 {r['ratios'].get('single_p95_faiss_over_pgvector', '-')} |")
        knn = f.get("knn_graph", {})
        lines.append(f"| k-NN graph k=10 s | {knn.get('seconds', '-')} (search {knn.get('search_seconds', '-')}, "
                     f"store {knn.get('store_seconds', '-')}; recall@10 {knn.get('recall_at_10', '-')}, "
                     f"{knn.get('nprobe', '-')} lists per list) | ~{p.get('knn_graph_seconds_extrapolated', '-')} "
                     f"(extrapolated) | {r['ratios'].get('knn_graph_pgvector_over_faiss', '-')}x |")
        lines += ["", "Filtered: recall@10 / p50 / p95 ms. `planner` and `pgvector engine`: engine.search, the same "
                  "contract (registry read, search, k hits with their metadata); `planner cold`: the planner "
                  "forgets the filter's pass rate before each query. `planner ids` (the planner's neighbours for k, "
                  "without the engine) and `pgvector ids` (its query alone): ids and distances, interleaved too. "
                  "Then each faiss plan forced:", "",
                  "| selectivity | planner | planner cold | pgvector engine | planner ids | pgvector ids | "
                  + " | ".join(PLANS) + " |", "|---" * (6 + len(PLANS)) + "|"]
        for label, row in f.get("filtered", {}).items():
            def cell(c: dict[str, Any]) -> str:
                return f"{c['recall_at_10']} / {c['p50_ms']} / {c['p95_ms']}"

            def pg_cells(prefix: str, row: dict[str, Any] = row) -> str:
                return "; ".join(f"ef {key.removeprefix(prefix)}: {cell(v)}" for key, v in row.items()
                                 if key.startswith(prefix)) or "-"
            cold = row.get("planner_cold")
            ids = row.get("planner_ids")
            lines.append(f"| {label} | {cell(row['planner'])} {row['planner'].get('strategy')} | "
                         f"{cell(cold) if cold else '-'} | {pg_cells('pgvector_engine_ef')} | "
                         f"{cell(ids) if ids else '-'} | {pg_cells('pgvector_ef')} | "
                         + " | ".join(cell(row[plan]) for plan in PLANS) + " |")
        lines += ["", "Held-out tuning: faiss " + json.dumps(f["held_out_tuning"]) + "; pgvector "
                  + json.dumps(p.get("held_out_tuning")), ""]
        if p.get("note"):
            lines += [f"Note (pgvector): {p['note']}", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--model", default=None, help="benchmark this stored model instead of synthetic data")
    parser.add_argument("--factory", default=None)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--tune-queries", type=int, default=300)
    parser.add_argument("--pg-tune-queries", type=int, default=300)
    parser.add_argument("--batch-queries", type=int, default=2000)
    parser.add_argument("--single-queries", type=int, default=150)
    parser.add_argument("--pgvector-batch", type=int, default=400)
    parser.add_argument("--filtered-queries", type=int, default=30)
    parser.add_argument("--pgvector-budget", type=float, default=1500.0)
    parser.add_argument("--skip-knn", action="store_true")
    parser.add_argument("--skip-pgvector", action="store_true", help="measure the faiss side only")
    parser.add_argument("--knn-nprobe", type=int, default=8, help="lists compared per list in the k-NN graph")
    parser.add_argument("--note", default="The 2 cores were shared with other jobs during the run: absolute "
                                          "figures are pessimistic, ratios are side by side in the same run.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("sisyphus_db").setLevel(logging.WARNING)
    info = machine()
    info["note"] = args.note
    args.out.mkdir(parents=True, exist_ok=True)
    external = os.environ.get("SISYPHUS_DATABASE_URL")
    if args.model:
        db = open_database(Settings.from_env())  # SISYPHUS_DATABASE_URL / SISYPHUS_HOME, as the CLI
        try:
            model = find_model(db, args.model)
            if model is None:
                raise SystemExit(f"no model {args.model!r} in the database")
            result = {**run_imported(db, model, args), "machine": info}
        finally:
            db.dispose()
        (args.out / f"sidecar-{args.model}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(markdown([result], info))
        return 0
    home = Path(tempfile.mkdtemp(prefix="sisyphus-bench-sidecar-"))
    server = None
    if external is None:
        from sisyphus_db.db.embedded import EmbeddedServer

        server = EmbeddedServer(home)
        server.start()
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            name = f"bench_sidecar_{n}"
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
            (args.out / f"sidecar-{n}.json").write_text(json.dumps(result, indent=2) + "\n")
            logger.info("n=%d: %s", n, json.dumps(result["ratios"]))
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        existing = sorted((p for p in args.out.glob("sidecar-[0-9]*.json") if p.stem.split("-")[1].isdigit()),
                          key=lambda p: int(p.stem.split("-")[1]))
        results = [json.loads(p.read_text()) for p in existing]
        (args.out / "sidecar.md").write_text(markdown(results, info))
        print(markdown(results, info))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
