"""One run at 10M x 128-d: import, build, bulk queries, k-NN graph and the memory each step used.

    python benchmarks/bench_scale.py --n 10000000 [--work DIR] [--keep]

1. generate: seeded clustered vectors (the last --queries rows are held out as queries),
   written as Parquet files of 1M rows (path, embedding, source, frame_index, tags) under
   --work;
2. import: `import-embeddings` (the library call the CLI makes) into a fresh database on a
   fresh embedded PostgreSQL under --work;
3. build: `index build` (auto factory, self-tuned nprobe and rerank depth, refine store);
4. bulk: held-out tuning to recall@10 >= the target, then batched queries, recall against
   brute force over the stored float16 vectors (blocked faiss.knn over the refine store);
5. k-NN graph: `knn-graph` k=10 stored in SQL, with its recall on sampled frames;
6. memory: peak resident memory of this process after each step, the database size and
   the index, refine and Parquet files on disk.

pgvector's HNSW is not built at this size here (hours on 2 cores): its side is
extrapolated from the 1M run in benchmarks/results/sidecar-1000000.json and said so.
Results: benchmarks/results/scale-<n>.json and scale.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))
from bench_build_memory import PeakMemory  # noqa: E402
from bench_search import K, machine  # noqa: E402
from bench_sidecar import faiss_bulk, tune_faiss_held_out  # noqa: E402

from sisyphus_db.ann.synthetic import clustered_vectors  # noqa: E402
from sisyphus_db.config import Settings  # noqa: E402
from sisyphus_db.db import migrate  # noqa: E402
from sisyphus_db.db.database import Database, open_database  # noqa: E402
from sisyphus_db.db.embedded import EmbeddedServer  # noqa: E402
from sisyphus_db.ingest.imports import import_embeddings  # noqa: E402
from sisyphus_db.search.indexing import build_faiss_index  # noqa: E402
from sisyphus_db.search.pgvector_index import embedding_partition  # noqa: E402
from sisyphus_db.search.knn_graph import build_knn_graph  # noqa: E402
from sisyphus_db.search.refine_sidecar import load_refine  # noqa: E402
from sisyphus_db.store.indexes import IndexRecord  # noqa: E402

logger = logging.getLogger("bench_scale")
RESULTS = Path(__file__).parent / "results"
MODEL = "bench-scale-128"
SOURCES = 1_000
CITIES = ["oslo"] * 1 + ["paris"] * 10 + ["berlin"] * 50 + ["rome"] * 39


def peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def generate(n: int, dim: int, queries: int, folder: Path, per_file: int) -> npt.NDArray[np.float32]:
    """Parquet files of the first n vectors; returns the held-out queries (also saved)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    saved = folder / "queries.npy"
    if saved.exists() and len(list(folder.glob("part-*.parquet"))) == math.ceil(n / per_file):
        return np.load(saved)
    folder.mkdir(parents=True, exist_ok=True)
    data = clustered_vectors(n + queries, dim, seed=0)
    per_source = math.ceil(n / SOURCES)
    for number, start in enumerate(range(0, n, per_file)):
        rows = np.arange(start, min(n, start + per_file))
        source = rows // per_source
        table = pa.table({
            "path": pa.array([f"s3://bench/video-{s:04d}/{r:09d}.jpg" for s, r in zip(source, rows, strict=True)]),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(data[rows].ravel()), dim),
            "source": pa.array([f"s3://bench/video-{s:04d}.mp4" for s in source]),
            "frame_index": pa.array(rows - source * per_source, type=pa.int64()),
            "tags": pa.array([f'{{"city": "{CITIES[s % len(CITIES)]}"}}' for s in source]),
        })
        pq.write_table(table, folder / f"part-{number:03d}.parquet", row_group_size=100_000)
        logger.info("wrote part %d (%d rows)", number, rows.size)
    queries = data[n:].copy()  # not a view: the 5 GB array is freed on return
    np.save(saved, queries)
    return queries


def brute_force(record: IndexRecord, queries: npt.NDArray[np.float32], k: int, block: int = 1_000_000) -> (
        npt.NDArray[np.int64]):
    """Exact top-k frame ids over the refine store's float16 rows (the stored halfvec values)."""
    import faiss

    store = load_refine(record)
    assert store is not None
    best_s = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    best_i = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for start in range(0, store.ids.size, block):
        rows = np.arange(start, min(store.ids.size, start + block))
        sims, pos = faiss.knn(queries, store.take(rows), k, metric=faiss.METRIC_INNER_PRODUCT)
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate([best_i, store.ids[rows][pos]], axis=1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    return best_i


def knn_sample_recall(db: Database, record: IndexRecord, model_id: int, sample: int = 200) -> float:
    store = load_refine(record)
    assert store is not None
    rng = np.random.default_rng(1)
    frames = np.sort(rng.choice(store.ids, size=sample, replace=False))
    truth = brute_force(record, store.take(store.rows_of(frames)), K + 1)
    with db.transaction() as conn:
        rows = conn.exec_driver_sql(
            "SELECT frame_id, array_agg(neighbor_id ORDER BY rank) FROM knn_edges "
            f"WHERE model_id = {int(model_id)} AND frame_id = ANY(%(f)s) GROUP BY frame_id",
            {"f": frames.tolist()}).all()
    found = dict(rows)
    recalls = []
    for frame, t in zip(frames.tolist(), truth, strict=True):
        expected = [int(x) for x in t if x != frame][:K]
        recalls.append(len(set(found.get(frame, [])) & set(expected)) / K)
    return float(np.mean(recalls))


def disk_gib(*paths: Path) -> float:
    return round(sum(p.stat().st_size for p in paths if p.exists()) / 2**30, 3)


def pgvector_extrapolation(n: int) -> dict[str, Any]:
    source = RESULTS / "sidecar-1000000.json"
    if not source.exists():
        return {"note": "no 1M pgvector figures to extrapolate from"}
    one_m = json.loads(source.read_text())
    pg = one_m.get("pgvector", {})
    seconds = pg.get("index_seconds") or pg.get("build_seconds")
    if not seconds:
        return {"note": "the 1M run has no pgvector build time"}
    scale = n / 1e6 * math.log(n) / math.log(1e6)  # HNSW inserts: n searches of ~log n hops each
    out = {"hnsw_build_seconds_extrapolated": round(seconds * scale, 0), "from_1m_build_seconds": seconds,
           "rule": "1M build x (n / 1M) x (log n / log 1M); an underestimate once the graph outgrows "
                   "maintenance_work_mem"}
    if pg.get("bulk"):
        out["bulk_qps_at_1m"] = pg["bulk"]["qps"]
        out["knn_graph_seconds_extrapolated"] = round(n / pg["bulk"]["qps"] * math.log(n) / math.log(1e6), 0)
    return out


def _memory(figures: dict[str, Any]) -> str:
    private = figures.get("step_peak_private_gib")
    return f"{figures.get('peak_rss_gib')} GiB" + (f" ({private} GiB)" if private is not None else "")


def markdown(r: dict[str, Any]) -> str:
    """benchmarks/results/scale.md from one run's figures."""
    m, imp, b, bulk = r["machine"], r.get("import", {}), r.get("build", {}), r.get("bulk", {})
    knn, pg, disk = r.get("knn_graph", {}), r.get("pgvector", {}), r.get("disk_gib", {})
    lines = [f"# One run at {r['n']:,} x {r['dim']}-d", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU; Python {m['python']}, faiss "
             f"{m['faiss']}. {m.get('note', '')} Data: {r['data']} ({r.get('resumed', 'one uninterrupted run')}).", "",
             ("| step | figure | time | peak memory of the process so far (peak private memory of the step, where "
              "measured) |"), "|---|---|---|---|",
             f"| generate Parquet | {r.get('generate', {}).get('files')} files, "
             f"{r.get('generate', {}).get('parquet_gib')} GiB | {r.get('generate', {}).get('step_seconds')} s | "
             f"{_memory(r.get('generate', {}))} |",
             f"| `import-embeddings` | {imp.get('rows', 0):,} rows, {imp.get('rows_per_second', 0):,.0f} rows/s | "
             f"{imp.get('step_seconds')} s | {_memory(imp)} |",
             f"| `index build` (auto) | {b.get('factory')}, tuned {b.get('tuned')} at recall@10 "
             f"{round(b.get('build_recall_at_10') or 0, 4)}; index {b.get('index_gib')} GiB + refine "
             f"{b.get('refine_gib')} GiB | {b.get('step_seconds')} s | {_memory(b)} |",
             f"| bulk queries | {bulk.get('qps')} q/s at recall@10 {bulk.get('recall_at_10')} on "
             f"{bulk.get('queries')} held-out queries (nprobe {bulk.get('nprobe')}, rerank {bulk.get('rerank_k')}) | "
             f"{bulk.get('seconds')} s | {_memory(bulk)} |",
             f"| `knn-graph` k=10 | {knn.get('edges', 0):,} edges stored in SQL, recall@10 {knn.get('recall_at_10')} "
             f"({knn.get('nprobe')} lists per list; search {knn.get('search_seconds')} s, store "
             f"{knn.get('store_seconds')} s) | {knn.get('seconds')} s | {_memory(knn)} |", "",
             f"On disk: database {disk.get('database')} GiB (frames {disk.get('frames')}, the model's embeddings "
             f"partition {disk.get('embeddings')}, knn_edges {disk.get('knn_edges')}). Peak memory of the whole run: "
             f"{r.get('memory_peak_rss_gib')} GiB.", "",
             "Held-out tuning: " + json.dumps(bulk.get("held_out_tuning")), "",
             "pgvector HNSW was not built at this size (hours on 2 cores). Extrapolated from the 1M run of "
             f"bench_sidecar.py: build ~{pg.get('hnsw_build_seconds_extrapolated')} s ({pg.get('rule')}); k-NN graph "
             f"by sequential queries ~{pg.get('knn_graph_seconds_extrapolated')} s (1M bulk rate "
             f"{pg.get('bulk_qps_at_1m')} q/s, slowed by log n). {pg.get('note', '')}", ""]
    return "\n".join(lines)


def build_and_measure(args: argparse.Namespace, db: Database, model: Any, queries: npt.NDArray[np.float32],
                      resumed: bool, step: Any) -> IndexRecord:
    """index build, then the ground truth, held-out tuning and bulk queries."""
    started = time.perf_counter()
    built = build_faiss_index(db, model, factory=args.factory, target_recall=args.target_recall)
    record = built.record
    store_files = [Path(record.params["refine"]["vectors_path"]), Path(record.params["refine"]["ids_path"])]
    step("build", started, factory=record.factory, tuned={k: record.params.get(k) for k in ("nprobe", "rerank_k")},
         build_recall_at_10=record.recall_at_10, index_gib=disk_gib(Path(str(record.path))),
         refine_gib=disk_gib(*store_files))

    started = time.perf_counter()
    cached = args.work / "truth.npy"  # the stored vectors do not change between resumed runs
    truth = np.load(cached) if resumed and cached.exists() else brute_force(record, queries, K)
    np.save(cached, truth)
    step("ground_truth", started, queries=int(queries.shape[0]))

    started = time.perf_counter()
    q_tune, q_meas = queries[:args.tune_queries], queries[args.tune_queries:]
    nprobe, depth, table = tune_faiss_held_out(record, q_tune, truth[:args.tune_queries], args.target_recall)
    bulk = faiss_bulk(record, q_meas, truth[args.tune_queries:], nprobe=nprobe, depth=depth)
    step("bulk", started, held_out_tuning=table, **bulk)

    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sisyphus-bench-scale"))
    parser.add_argument("--per-file", type=int, default=1_000_000)
    parser.add_argument("--tune-queries", type=int, default=300)
    parser.add_argument("--batch-queries", type=int, default=2000)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--knn-nprobe", type=int, default=8)
    parser.add_argument("--skip-knn", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database and files under --work")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the database a stopped run imported under --work (its import figures come from "
                             "the partial results) and rebuild from there")
    parser.add_argument("--factory", default="auto")
    parser.add_argument("--only-knn", action="store_true",
                        help="with --resume: keep the build and bulk figures of the stopped run, re-run the k-NN graph")
    parser.add_argument("--note", default="Other jobs may have shared the 2 cores: absolute times are upper bounds.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", type=Path, default=None, help="only write scale.md from this results file")
    args = parser.parse_args(argv)
    if args.render is not None:
        (args.out / "scale.md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("sisyphus_db").setLevel(logging.WARNING)
    n = args.n
    out: dict[str, Any] = {"n": n, "dim": args.dim, "data": "clustered_vectors synthetic, imported from Parquet",
                           "machine": {**machine(), "note": args.note}}
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"scale-{n}.partial.json"

    watch = PeakMemory()  # per step: ru_maxrss only ever grows, so it cannot tell one step's peak
    watch.start()

    def step(name: str, started: float, **figures: Any) -> None:
        anon, _ = watch.take()
        out[name] = {**figures, "step_seconds": round(time.perf_counter() - started, 1), "peak_rss_gib": peak_rss_gib(),
                     "step_peak_private_gib": round(anon / 1024, 2)}
        logger.info("%s: %s", name, json.dumps(out[name]))
        partial.write_text(json.dumps(out, indent=2, default=str) + "\n")

    home = args.work / "home"
    resumed = args.resume and (home / "pgdata").is_dir() and partial.exists()
    if resumed:
        earlier = json.loads(partial.read_text())
        kept = ("generate", "import", "build", "ground_truth", "bulk") if args.only_knn else ("generate", "import")
        out.update({key: earlier[key] for key in kept if key in earlier})
        out["resumed"] = (f"{', '.join(kept)} from the stopped run; " +
                          ("the k-NN graph re-run" if args.only_knn else "build and later steps re-run"))
    started = time.perf_counter()
    queries = generate(n, args.dim, args.tune_queries + args.batch_queries, args.work / "parquet", args.per_file)
    files = sorted((args.work / "parquet").glob("part-*.parquet"))
    if not resumed:
        step("generate", started, files=len(files), parquet_gib=disk_gib(*files))
        shutil.rmtree(home, ignore_errors=True)
    server = EmbeddedServer(home)
    server.start()
    try:
        admin = server.socket_url("postgres")
        if not resumed:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute('CREATE DATABASE "bench_scale"')
        url = make_url(admin).set(database="bench_scale").render_as_string(hide_password=False)
        db = open_database(Settings(home=home, database_url=url), require_schema=False)
        migrate.upgrade(db)

        if not resumed:
            started = time.perf_counter()
            report = import_embeddings(db, files, model_name=MODEL)
            step("import", started, rows=report.rows, frames_added=report.frames_added,
                 rows_per_second=round(report.rows / max(report.seconds, 1e-9), 0))

        from sisyphus_db.store.registry import find_model

        model = find_model(db, MODEL)
        assert model is not None
        if resumed and args.only_knn:
            from sisyphus_db.store.indexes import find_index

            found = find_index(db, model.id, "faiss")
            assert found is not None, "no faiss index to resume from"
            record = found
        else:
            record = build_and_measure(args, db, model, queries, resumed, step)
        if not args.skip_knn:
            started = time.perf_counter()
            knn = build_knn_graph(db, model, k=K, nprobe=args.knn_nprobe)
            step("knn_graph", started, **knn.to_json(), nprobe=args.knn_nprobe,
                 recall_at_10=round(knn_sample_recall(db, record, model.id), 4))

        with db.transaction() as conn:
            sizes = dict(conn.exec_driver_sql(
                "SELECT 'database', pg_database_size(current_database()) UNION ALL "
                f"SELECT 'embeddings', pg_total_relation_size('{embedding_partition(model.id)}') "
                "UNION ALL SELECT 'frames', pg_total_relation_size('frames') UNION ALL "
                "SELECT 'knn_edges', pg_total_relation_size('knn_edges')").all())
        out["disk_gib"] = {name: round(int(size) / 2**30, 2) for name, size in sizes.items()}
        out["memory_peak_rss_gib"] = peak_rss_gib()
        out["pgvector"] = pgvector_extrapolation(n)
        db.dispose()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"scale-{n}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    (args.out / "scale.md").write_text(markdown(out))
    partial.unlink(missing_ok=True)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
