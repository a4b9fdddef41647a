"""`sisyphus serve` under load: requests/s and p50/p95 of search by frame and by uploaded image.

    python benchmarks/bench_serve.py [--frames 100000] [--seconds 15] [--clients 1,8]

A fresh embedded database in a temporary home gets `--frames` synthetic 1280-d vectors
(clustered unit vectors, sisyphus_db.ann.synthetic) stored through the COPY loader
(sisyphus_db.store.bulk) under the real efficientnet-lite0 model row, so an uploaded
image is embedded by the real model and searched against them, and a faiss index built
with `--factory` (default auto, as `sisyphus index build` picks). Then a real
`sisyphus serve` process on loopback is loaded by 1 and 8 concurrent HTTP clients (keep-
alive connections, one thread each) for `--seconds` per scenario: search by a random
frame id, and search by a 640x480 JPEG upload; every request stores its run, as the CLI
does. Next to it: the same searches through the CLI (`sisyphus search --frame/--image`, a
new process each, as people run it today).
Results: benchmarks/results/serve.json and benchmarks/results/serve.md.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from sisyphus_db.ann.synthetic import clustered_vectors
from sisyphus_db.config import Settings
from sisyphus_db.db.database import open_database
from sisyphus_db.embed.models import get_model_spec
from sisyphus_db.search.indexing import build_faiss_index
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import register_model, upsert_source

logger = logging.getLogger("bench_serve")
RESULTS = Path(__file__).parent / "results"
MODEL = "efficientnet-lite0"
N_SOURCES = 100
BATCH = 10_000
K = 10


def load_corpus(home: Path, n: int, factory: str, seed: int) -> tuple[list[int], dict[str, Any]]:
    """Store n synthetic frames under the real model row and build the faiss index; returns the frame ids.

    A home that already holds them (`--home` of an earlier run) is reused as it is.
    """
    db = open_database(Settings(home=home))
    try:
        kept = home / "bench-corpus.json"
        if kept.exists():
            info = json.loads(kept.read_text())
            if info["frames"] == n:
                with db.transaction() as conn:
                    ids = [int(r[0]) for r in conn.exec_driver_sql(
                        "SELECT frame_id FROM embeddings e JOIN models m ON m.id = e.model_id "
                        f"WHERE m.name = '{MODEL}' ORDER BY frame_id")]
                if len(ids) == n:
                    logger.info("reusing the corpus in %s: %s", home, info)
                    return ids, info
        spec = get_model_spec(MODEL)
        model = register_model(db, name=spec.name, dim=spec.dim, weights_sha256=spec.weights_sha256,
                               pooling=spec.pooling, preprocessing=spec.preprocessing)
        started = time.perf_counter()
        vectors = clustered_vectors(n, spec.dim, seed=seed)
        sources = [upsert_source(db, uri=f"/bench/video-{s:03d}.mp4", kind="video",
                                 tags={"city": ("berlin", "paris", "oslo")[s % 3]}).id for s in range(N_SOURCES)]
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            rows = [FrameRow(source_id=sources[i * N_SOURCES // n], frame_index=i, pts_seconds=i / 25.0,
                             path=f"/bench/frames/{i:08d}.jpg", width=224, height=224, sha256=f"{i:064x}",
                             keyframe_method="fps") for i in range(start, stop)]
            load_frames(db, model.id, rows, vectors[start:stop])
        load_seconds = time.perf_counter() - started
        del vectors
        with db.transaction() as conn:
            conn.exec_driver_sql("ANALYZE frames")
            conn.exec_driver_sql("ANALYZE embeddings")
            ids = [int(r[0]) for r in conn.exec_driver_sql(
                f"SELECT frame_id FROM embeddings WHERE model_id = {model.id} ORDER BY frame_id")]
        report = build_faiss_index(db, model, factory=factory)
        record = report.record
        info = {"frames": n, "dim": spec.dim, "load_seconds": round(load_seconds, 1), "factory": record.factory,
                "build_seconds": round(report.seconds, 1), "nprobe": record.params.get("nprobe"),
                "rerank_k": record.params.get("rerank_k"), "recall_at_10": record.recall_at_10}
        logger.info("corpus: %s", info)
        kept.write_text(json.dumps(info))
        return ids, info
    finally:
        db.dispose()


def query_jpeg() -> bytes:
    """A 640x480 photo-like JPEG (a real sample photo when scikit-image is installed)."""
    try:
        from skimage import data as samples

        image = Image.fromarray(samples.astronaut()).resize((640, 480))
    except Exception:  # noqa: BLE001 - any smooth picture will do
        ys, xs = np.mgrid[0:480, 0:640]
        rgb = np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=2).astype(np.uint8)
        image = Image.fromarray(rgb)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: dict[str, str], port: int, threads: int | None) -> subprocess.Popen[str]:
    extra = [] if threads is None else ["--workers-threads", str(threads)]
    process = subprocess.Popen([sys.executable, "-m", "sisyphus_db.cli.main", "serve", "--port", str(port), *extra],
                               env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the server did not become ready in 300 s")
        time.sleep(0.5)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids(pgdata: Path) -> list[int]:
    """The embedded PostgreSQL's postmaster (its command line names the data directory) and its children."""
    parents: dict[int, int] = {}
    postmaster = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if str(pgdata) in cmdline and "postgres" in cmdline:
            postmaster = int(entry.name)
    return [] if postmaster is None else [postmaster, *[p for p, parent in parents.items() if parent == postmaster]]


class CpuMeter:
    """CPU seconds spent by the server process and by PostgreSQL (its backends come and go with the pool)."""

    def __init__(self, server_pid: int, pgdata: Path) -> None:
        self.server_pid = server_pid
        self.pgdata = pgdata

    def snapshot(self) -> dict[int, float]:
        return {pid: _cpu_seconds(pid) for pid in [self.server_pid, *postgres_pids(self.pgdata)]}

    def spent(self, before: dict[int, float]) -> tuple[float, float]:
        after = self.snapshot()
        server = after.get(self.server_pid, 0.0) - before.get(self.server_pid, 0.0)
        postgres = sum(after[pid] - before.get(pid, 0.0) for pid in after if pid != self.server_pid)
        return server, postgres


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan")}
    return {"p50_ms": round(ordered[len(ordered) // 2], 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
            "mean_ms": round(statistics.fmean(ordered), 2)}


def load_test(base: str, kind: str, clients: int, seconds: float, ids: list[int], jpeg: bytes,
              seed: int, meter: CpuMeter | None = None) -> dict[str, Any]:
    """`clients` threads, each with its own keep-alive connection, for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop_at = time.monotonic() + seconds
    go = threading.Barrier(clients)

    def client(index: int) -> None:
        rng = np.random.default_rng(seed + index)
        with httpx.Client(base_url=base, timeout=60) as http:
            go.wait()
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                if kind == "frame":
                    response = http.post("/api/search", json={"frame_id": ids[int(rng.integers(len(ids)))], "k": K})
                else:
                    response = http.post("/api/search/image", files={"file": ("q.jpg", jpeg, "image/jpeg")},
                                         data={"k": str(K)})
                elapsed = (time.perf_counter() - started) * 1000.0
                if response.status_code == 200 and len(response.json()["results"]) == K:
                    latencies[index].append(elapsed)
                else:
                    errors[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    cpu_before = meter.snapshot() if meter is not None else {}
    client_cpu = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    server_cpu, postgres_cpu = meter.spent(cpu_before) if meter is not None else (float("nan"), float("nan"))
    samples = [x for per_client in latencies for x in per_client]
    served = max(1, len(samples) + sum(errors))
    result = {"kind": kind, "clients": clients, "seconds": round(wall, 1), "requests": len(samples),
              "errors": sum(errors), "requests_per_s": round(len(samples) / wall, 1), **percentiles(samples),
              "load_average_1min": round(os.getloadavg()[0], 1),
              # CPU per request does not depend on how busy the machine is, unlike the latencies.
              "server_cpu_ms_per_request": round(server_cpu * 1000 / served, 2),
              "postgres_cpu_ms_per_request": round(postgres_cpu * 1000 / served, 2),
              "client_cpu_ms_per_request": round(client_cpu * 1000 / served, 2)}
    logger.info("%s", result)
    return result


def cli_timings(env: dict[str, str], ids: list[int], jpeg_path: Path, runs: int) -> list[dict[str, Any]]:
    out = []
    for kind, args in (("frame", ["--frame", str(ids[len(ids) // 2])]), ("image", ["--image", str(jpeg_path)])):
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "sisyphus_db.cli.main", "search", *args, "--k", str(K),
                                   "--json"], env=env, capture_output=True, text=True)
            samples.append((time.perf_counter() - started) * 1000.0)
            if done.returncode != 0:
                raise RuntimeError(f"sisyphus search failed: {done.stderr}")
        out.append({"kind": kind, "runs": runs, **percentiles(samples)})
        logger.info("cli %s: %s", kind, out[-1])
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "python": platform.python_version(),
            "platform": platform.platform(), "load_average_at_start": [round(x, 2) for x in load]}


def markdown(result: dict[str, Any]) -> str:
    info, corpus = result["machine"], result["corpus"]
    lines = [
        "# sisyphus serve under load",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Python {info['python']}; "
        f"load average at start {info['load_average_at_start']}. **Other jobs (other helpers' tests and builds) "
        "shared these 2 cores during the run**, so the figures are pessimistic and noisy; the load generator "
        "(Python threads) also ran on the same cores as the server and PostgreSQL.",
        "",
        f"Corpus: {corpus['frames']:,} frames with synthetic {corpus['dim']}-d vectors under the real "
        f"{MODEL} model row (loaded with the COPY loader in {corpus['load_seconds']} s), faiss "
        f"`{corpus['factory']}` (nprobe {corpus['nprobe']}, rerank depth {corpus['rerank_k']}, recall@10 "
        f"{corpus['recall_at_10']}), built in {corpus['build_seconds']} s. k = {K}; every request stores its run.",
        "",
        f"Server: `sisyphus serve --workers-threads {result['threads']}` on 127.0.0.1 (uvicorn, one process); "
        f"each scenario runs {result['seconds_per_scenario']} s with N clients, each a thread with one keep-alive "
        "connection sending requests back to back.",
        "",
        "| search | clients | requests | requests/s | p50 ms | p95 ms | mean ms | errors | machine load (1 min) "
        "| server CPU ms/request | PostgreSQL CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["server"]:
        what = "by frame id" if row["kind"] == "frame" else "by uploaded image (640x480 JPEG)"
        lines.append(f"| {what} | {row['clients']} | {row['requests']} | {row['requests_per_s']} | {row['p50_ms']} "
                     f"| {row['p95_ms']} | {row['mean_ms']} | {row['errors']} | {row.get('load_average_1min', '')} "
                     f"| {row.get('server_cpu_ms_per_request', '')} | {row.get('postgres_cpu_ms_per_request', '')} |")
    lines += ["", "CPU per request (server process plus PostgreSQL, measured from /proc) does not depend on how "
              "busy the machine was, unlike the latencies: two idle cores could serve at most about "
              "2,000 / (server + PostgreSQL CPU ms) requests a second, before the clients' own CPU."]
    for row in result["server"]:
        cost = row.get("server_cpu_ms_per_request", 0) + row.get("postgres_cpu_ms_per_request", 0)
        if row["clients"] == max(r["clients"] for r in result["server"]) and cost > 0:
            lines.append(f"- {row['kind']}: {cost:.2f} ms of CPU a request -> at most ~{2000 / cost:.0f} requests/s "
                         "on two idle cores.")
    lines += ["", "The same searches through the CLI (a new `sisyphus search ... --json` process each: imports, "
              "model load, index load):", "",
              "| search | runs | p50 ms | p95 ms | mean ms |", "|---|---:|---:|---:|---:|"]
    for row in result["cli"]:
        lines.append(f"| --{row['kind']} | {row['runs']} | {row['p50_ms']} | {row['p95_ms']} | {row['mean_ms']} |")
    goal = next((r for r in result["server"] if r["kind"] == "frame" and r["clients"] == 8), None)
    if goal is not None:
        verdict = "met" if goal["p95_ms"] <= 50 else "missed"
        lines += ["", f"Goal (search by frame, p95 <= 50 ms at 8 concurrent clients): **{verdict}** "
                      f"(p95 {goal['p95_ms']} ms)."]
    lines += ["", "Reproduce: `python benchmarks/bench_serve.py` (add `--frames 20000 --seconds 5` for a quick run).",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each load scenario")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--threads", type=int, default=None, help="sisyphus serve --workers-threads (default: its own)")
    parser.add_argument("--factory", default="auto")
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--home", type=Path, default=None,
                        help="data directory to use and keep (a second run reuses its corpus and index)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("sisyphus_db").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    home = args.home or Path(tempfile.mkdtemp(prefix="sisyphus-bench-serve-"))
    home.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "SISYPHUS_DATABASE_URL"}
    env["SISYPHUS_HOME"] = str(home)
    os.environ["SISYPHUS_HOME"] = str(home)
    os.environ.pop("SISYPHUS_DATABASE_URL", None)
    info = machine()
    process = None
    try:
        # A kept home may predate the code's newest migration.
        subprocess.run([sys.executable, "-m", "sisyphus_db.cli.main", "db", "upgrade"], env=env, check=True,
                       capture_output=True)
        ids, corpus = load_corpus(home, args.frames, args.factory, args.seed)
        jpeg = query_jpeg()
        jpeg_path = home / "query.jpg"
        jpeg_path.write_bytes(jpeg)
        port = free_port()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sisyphus_db.cli.main", "db", "upgrade"], env=env, check=True,
                       capture_output=True)
        process = start_server(env, port, args.threads)
        startup = time.perf_counter() - started
        base = f"http://127.0.0.1:{port}"
        # Warm-up: first requests pay for lazy imports and caches.
        for kind in ("frame", "image"):
            load_test(base, kind, 1, 2.0, ids, jpeg, args.seed)
        meter = CpuMeter(process.pid, home / "pgdata")
        server = [load_test(base, kind, int(c), args.seconds, ids, jpeg, args.seed, meter)
                  for kind in ("frame", "image") for c in args.clients.split(",")]
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        process = None
        cli = cli_timings(env, ids, jpeg_path, args.cli_runs)
        from sisyphus_db.serve.state import DEFAULT_THREADS

        result = {"machine": info, "corpus": corpus, "threads": args.threads or DEFAULT_THREADS, "seconds_per_scenario": args.seconds,
                  "server_startup_seconds": round(startup, 1), "server": server, "cli": cli}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "serve.md").write_text(markdown(result))
        print(markdown(result))
    finally:
        if process is not None:
            process.kill()
        subprocess.run([sys.executable, "-m", "sisyphus_db.cli.main", "db", "stop"], env=env, capture_output=True)
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
