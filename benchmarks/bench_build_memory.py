"""Peak memory of `index build`: streamed through the refine store vs a float32 copy in memory.

Both builds run side by side in one invocation, each in a fresh child process over the same
stored vectors (synthetic clustered_vectors loaded by COPY):
- `streamed`: the product path (search.indexing.build_faiss_index): PostgreSQL's vectors are
  streamed into the refine store's mapped float16 file, and training, adding and tuning read
  that file a block at a time;
- `in-memory`: the path before it, rebuilt from the same library calls: every vector read
  into one float32 array (store.vectors.model_vectors), built, tuned, then the refine store
  written from it.
A thread samples /proc/self/status every 20 ms: peak anonymous memory (private: what a build
really needs) and peak resident memory (which also counts the pages of mapped files, which the
kernel can drop). Results: benchmarks/results/build_memory.json and build_memory.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import load_corpus, machine

from sisyphus_db.ann.synthetic import clustered_vectors
from sisyphus_db.config import Settings
from sisyphus_db.db import migrate
from sisyphus_db.db.database import open_database

RESULTS = Path(__file__).parent / "results"
MODES = ("streamed", "in-memory")


class PeakMemory(threading.Thread):
    """Largest RssAnon and VmRSS of this process seen while running (MiB)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.anon = self.rss = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
            self.anon = max(self.anon, int(fields["RssAnon"].split()[0]) / 1024)
            self.rss = max(self.rss, int(fields["VmRSS"].split()[0]) / 1024)

    def take(self) -> tuple[float, float]:
        """(peak anonymous, peak resident) MiB since the last take, and start over."""
        peaks = (self.anon, self.rss)
        self.anon = self.rss = 0.0
        return peaks


def child(mode: str, url: str, home: Path, factory: str, dim: int) -> dict[str, Any]:
    from sisyphus_db.ann.build import build_index
    from sisyphus_db.ann.tune import tune
    from sisyphus_db.search.indexing import (
        IN_MEMORY_RERANK_DEPTHS,
        IN_MEMORY_RERANK_WEIGHT,
        build_faiss_index,
        index_path,
    )
    from sisyphus_db.search.refine_sidecar import write_new_refine
    from sisyphus_db.store.registry import find_model
    from sisyphus_db.store.vectors import model_vectors

    db = open_database(Settings(home=home, database_url=url))
    model = find_model(db, f"bench-{dim}")  # as bench_search.load_corpus names it
    if model is None:
        raise SystemExit(f"no bench-{dim} model in the benchmark database")
    if factory == "auto":
        from sisyphus_db.ann.factory import choose_factory
        from sisyphus_db.store.vectors import vector_count

        factory = choose_factory(vector_count(db, model.id), model.dim)
    watch = PeakMemory()
    watch.start()
    time.sleep(0.1)
    baseline = watch.anon
    started = time.perf_counter()
    if mode == "streamed":
        report = build_faiss_index(db, model, factory=factory)
        recall = report.record.recall_at_10
    else:
        ids, vectors = model_vectors(db, model.id, model.dim)
        index = build_index(vectors, ids, factory=factory)
        tuned = tune(index, vectors, ids, rerank_weight=IN_MEMORY_RERANK_WEIGHT, rerank_depths=IN_MEMORY_RERANK_DEPTHS)
        write_new_refine(index_path(db, model).with_name("in-memory.faiss"), ids, vectors)
        recall = tuned.recall_at_10
    seconds = time.perf_counter() - started
    watch.done.set()
    watch.join()
    return {"mode": mode, "factory": factory, "seconds": round(seconds, 1), "peak_anon_mib": round(watch.anon, 1),
            "anon_before_mib": round(baseline, 1), "peak_rss_mib": round(watch.rss, 1),
            "tuned_recall_at_10": recall}


def render(out: Path) -> str:
    """build_memory.md from every build_memory-<n>.json in the folder."""
    results = sorted((json.loads(p.read_text()) for p in out.glob("build_memory-*.json")), key=lambda r: r["n"])
    lines = ["# `index build` memory: streamed through the refine store vs a float32 copy in memory", "",
             ("`benchmarks/bench_build_memory.py`; each build in a fresh process over the same stored vectors. "
              "Peak anonymous memory is what the build itself holds; peak resident memory also counts the pages "
              "of the mapped refine file, which the kernel may drop."), ""]
    for r in results:
        m = r["machine"]
        factory = r["runs"][0].get("factory", r["factory"]) if r["runs"] else r["factory"]
        lines += [f"## {r['n']:,} x {r['dim']}-d, {factory}", "",
                  (f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB. {m['note']} "
                   f"A float32 copy of every vector is {r['float32_vectors_mib']:,.0f} MiB."), "",
                  "| build | seconds | peak anonymous MiB | peak resident MiB | tuned recall@10 |", "|---|---|---|---|---|"]
        lines += [f"| {run['mode']} | {run['seconds']} | {run['peak_anon_mib']:,.0f} | {run['peak_rss_mib']:,.0f} | "
                  f"{round(run['tuned_recall_at_10'], 4)} |" for run in r["runs"]]
        lines.append("")
    text = "\n".join(lines)
    (out / "build_memory.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--factory", default="IVF4096,PQ16", help="a faiss factory string, or auto")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        print(json.dumps(child(args.child, args.url, args.home, args.factory, args.dim)))
        return 0
    from sisyphus_db.db.embedded import EmbeddedServer

    home = Path(tempfile.mkdtemp(prefix="sisyphus-bench-build-memory-"))
    server = EmbeddedServer(home)
    server.start()
    try:
        admin = server.socket_url("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "bench_build_memory"')
        url = make_url(admin).set(database="bench_build_memory").render_as_string(hide_password=False)
        db = open_database(Settings(home=home, database_url=url), require_schema=False)
        migrate.upgrade(db)
        load_corpus(db, clustered_vectors(args.n, args.dim, seed=0), args.dim)
        db.dispose()
        runs = []
        for mode in MODES:
            done = subprocess.run([sys.executable, __file__, "--child", mode, "--url", url, "--home", str(home),
                                   "--factory", args.factory, "--dim", str(args.dim)], check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    vectors_mib = args.n * args.dim * 4 / 2**20
    result = {"n": args.n, "dim": args.dim, "factory": args.factory, "float32_vectors_mib": round(vectors_mib, 1),
              "runs": runs, "machine": {**machine(), "note": args.note}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"build_memory-{args.n}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(render(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
