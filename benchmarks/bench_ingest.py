"""Ingest throughput on this machine: end-to-end frames/s next to model-only, and COPY vs INSERT.

    python benchmarks/bench_ingest.py [--quick] [--batch-size 32] [--workers N]

Generates its own data in a temporary directory (photo-sized JPEGs and an H.264 video),
uses SISYPHUS_DATABASE_URL when set or else starts an embedded PostgreSQL under a
temporary home, and measures:

- model-only forward throughput (`forward_throughput`: same model, same batch size,
  input already prepared, no decoding, no database);
- end-to-end `run_ingest` frames/s for a folder of images and for a video with `fps`
  key frames (so the frame count is known), and their ratio to model-only: the target
  is >= 0.8, i.e. decoding, JPEG encoding and COPY overlap the forward passes;
- binary COPY rows/s against row-by-row INSERT rows/s for 1280-d halfvec rows, and the
  pipeline's own writer path (`load_frames`: staging COPY + frames + embeddings).

Prints a table, writes benchmarks/results/ingest-<label>.json and rewrites
benchmarks/results/ingest.md from every JSON result there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from sisyphus_db.config import Settings
from sisyphus_db.db import migrate
from sisyphus_db.db.database import Database, libpq_url, open_database
from sisyphus_db.db.embedded import EmbeddedServer
from sisyphus_db.embed.embedder import Embedder, forward_throughput, load_embedder
from sisyphus_db.ingest.messages import KeyframeOptions
from sisyphus_db.ingest.pipeline import IngestOptions, default_workers, run_ingest
from sisyphus_db.media import synthetic
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import register_model, upsert_source

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 1280


@dataclass(frozen=True)
class Sizes:
    images: int
    image_size: tuple[int, int]
    video_seconds: float
    video_size: tuple[int, int]
    video_fps: int
    sample_fps: float
    copy_rows: int
    insert_rows: int
    model_batches: int


FULL = Sizes(images=320, image_size=(640, 480), video_seconds=64.0, video_size=(640, 360), video_fps=10,
             sample_fps=5.0, copy_rows=20_000, insert_rows=2_000, model_batches=8)
QUICK = Sizes(images=64, image_size=(640, 480), video_seconds=16.0, video_size=(640, 360), video_fps=10,
              sample_fps=5.0, copy_rows=5_000, insert_rows=500, model_batches=3)


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def make_data(root: Path, sizes: Sizes) -> tuple[Path, Path, int]:
    images = root / "photos"
    for seed in range(sizes.images):
        synthetic.write_test_image(images / f"{seed:05d}.jpg", seed, size=sizes.image_size)
    video = root / "drive.mp4"
    segments = synthetic.default_segments(int(sizes.video_seconds // 4), 4.0)
    synthetic.write_test_video(video, segments, fps=sizes.video_fps, size=sizes.video_size)
    frames = int(round(sizes.video_seconds * sizes.sample_fps))
    return images, video, frames


def open_bench_database(home: Path) -> tuple[Database, EmbeddedServer | None]:
    url = os.environ.get("SISYPHUS_DATABASE_URL")
    settings = Settings(home=home, database_url=url or None)
    db = open_database(settings, require_schema=False)
    if migrate.current_revision(db) is None:
        migrate.upgrade(db)
    migrate.check_schema(db)
    return db, (None if url else EmbeddedServer(home))


def bench_ingest(db: Database, embedder: Embedder, path: Path, options: IngestOptions, expected: int) -> dict[str, Any]:
    summary = run_ingest(db, [path], options, embedder=embedder)
    if summary.frames != expected or summary.errors:
        raise SystemExit(f"ingest of {path} stored {summary.frames} frames (expected {expected}), "
                         f"{summary.errors} errors: {summary.error_details}")
    return {"frames": summary.frames, "seconds": round(summary.seconds, 3),
            "frames_per_second": round(summary.frames_per_second, 2)}


def bench_copy_vs_insert(url: str, sizes: Sizes) -> dict[str, Any]:
    """Raw binary COPY vs one INSERT per row into a 1280-d halfvec table (same rows, same types)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(sizes.copy_rows, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    halves = [HalfVector(v) for v in vectors]
    with psycopg.connect(libpq_url(url)) as conn:
        register_vector(conn)
        conn.execute("DROP TABLE IF EXISTS bench_vectors")
        conn.execute(f"CREATE UNLOGGED TABLE bench_vectors (id bigint, vec halfvec({DIM}))")
        conn.commit()

        started = time.perf_counter()
        with conn.cursor().copy("COPY bench_vectors (id, vec) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["bigint", "halfvec"])
            for i, vec in enumerate(halves):
                copy.write_row((i, vec))
        conn.commit()
        copy_seconds = time.perf_counter() - started
        conn.execute("TRUNCATE bench_vectors")
        conn.commit()

        # Row by row, as a naive loader would: one INSERT statement and round trip per row,
        # all in one transaction (committing per row would be slower still).
        started = time.perf_counter()
        with conn.cursor() as cursor:
            for i in range(sizes.insert_rows):
                cursor.execute("INSERT INTO bench_vectors (id, vec) VALUES (%s, %s)", (i, halves[i]))
        conn.commit()
        insert_seconds = time.perf_counter() - started
        conn.execute("TRUNCATE bench_vectors")
        conn.commit()

        # executemany: psycopg 3 pipelines it, so it is the best case for INSERTs.
        started = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO bench_vectors (id, vec) VALUES (%s, %s)",
                               [(i, halves[i]) for i in range(sizes.insert_rows)])
        conn.commit()
        many_seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_vectors")
        conn.commit()
    copy_rate = sizes.copy_rows / copy_seconds
    insert_rate = sizes.insert_rows / insert_seconds
    return {
        "copy_rows": sizes.copy_rows, "copy_seconds": round(copy_seconds, 3), "copy_rows_per_second": round(copy_rate),
        "insert_rows": sizes.insert_rows, "insert_seconds": round(insert_seconds, 3),
        "insert_rows_per_second": round(insert_rate),
        "executemany_rows_per_second": round(sizes.insert_rows / many_seconds),
        "copy_over_insert": round(copy_rate / insert_rate, 1),
    }


def bench_load_frames(db: Database, sizes: Sizes, batch_size: int) -> dict[str, Any]:
    """The pipeline's writer path: COPY into staging, then frames + embeddings, one transaction per batch."""
    model = register_model(db, name="bench-random-1280", dim=DIM, weights_sha256="0" * 64, pooling="avg",
                           preprocessing={})
    source = upsert_source(db, uri=f"bench://load-frames/{time.time_ns()}", kind="video", tags={})
    rng = np.random.default_rng(1)
    rows = [FrameRow(source_id=source.id, frame_index=i, pts_seconds=i / 10, path=f"/bench/{i:010d}.jpg",
                     width=640, height=360, sha256=f"{i:064x}", keyframe_method="fps", keyframe_score=1.0)
            for i in range(sizes.copy_rows)]
    vectors = rng.normal(size=(sizes.copy_rows, DIM)).astype(np.float32)
    started = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        load_frames(db, model.id, rows[start:start + batch_size], vectors[start:start + batch_size])
    seconds = time.perf_counter() - started
    return {"rows": len(rows), "batch_size": batch_size, "seconds": round(seconds, 3),
            "rows_per_second": round(len(rows) / seconds)}


def write_markdown() -> Path:
    results = []
    for path in sorted(RESULTS.glob("ingest-*.json")):
        results.append(json.loads(path.read_text()))
    lines = [
        "# Ingest benchmark",
        "",
        "Written by `python benchmarks/bench_ingest.py` (rewritten from every `ingest-*.json` here).",
        "End-to-end is `run_ingest` wall time from start to summary (discovery, worker start-up,",
        "decoding, JPEG encoding, embedding, COPY), over the model-only forward throughput of the",
        "same model and batch size. Target: end-to-end >= 0.8 x model-only.",
        "",
    ]
    for result in results:
        m, r = result["machine"], result["results"]
        model, copy = r["model_only"], r["copy_vs_insert"]
        lines += [
            f"## {result['label']} ({result['date'][:10]}{', quick' if result['quick'] else ''})",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads, "
            f"Python {m['python']}{', GPU ' + m['cuda'] if m['cuda'] else ', no GPU'}. "
            f"Model {result['model']} on {result['device']}, batch {result['batch_size']}, "
            f"{result['workers']} decoding worker(s).",
            "",
            "| measurement | frames | seconds | frames/s | x model-only |",
            "|---|---:|---:|---:|---:|",
            f"| model only (forward, prepared input; torch threads: {model['torch_threads']}) | {model['images']} | "
            f"{model['seconds']} | {model['images_per_second']} | 1.00 |",
        ]
        for threads, rate in model.get("by_threads", {}).items():
            if int(threads) != model["torch_threads"]:
                lines.append(f"| model only, torch threads: {threads} | | | {rate} | "
                             f"{rate / model['images_per_second']:.2f} |")
        for key, name in (("images", "end-to-end images"), ("video", "end-to-end video (fps key frames)")):
            e = r[key]
            lines.append(f"| {name}{' ' + e['note'] if e.get('note') else ''} | {e['frames']} | {e['seconds']} | "
                         f"{e['frames_per_second']} | {e['ratio_to_model_only']:.2f} |")
        lf = r["load_frames"]
        lines += [
            "",
            "| loading 1280-d halfvec rows | rows | rows/s |",
            "|---|---:|---:|",
            f"| binary COPY | {copy['copy_rows']} | {copy['copy_rows_per_second']} |",
            f"| INSERT, one statement per row | {copy['insert_rows']} | {copy['insert_rows_per_second']} |",
            f"| INSERT, executemany (pipelined) | {copy['insert_rows']} | {copy['executemany_rows_per_second']} |",
            f"| pipeline writer `load_frames` (staging COPY + frames + embeddings, batch {lf['batch_size']}) | "
            f"{lf['rows']} | {lf['rows_per_second']} |",
            "",
            f"COPY is {copy['copy_over_insert']}x row-by-row INSERT.",
            "",
        ]
        if result.get("notes"):
            lines += [f"- {note}" for note in result["notes"]] + [""]
    path = RESULTS / "ingest.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data: a smoke run in about a minute")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: the pipeline's)")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--label", default=None, help="result file name part (default: device and core count)")
    parser.add_argument("--no-write", action="store_true", help="print only; write no result files")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    workers = args.workers or default_workers()

    root = Path(tempfile.mkdtemp(prefix="sisyphus-bench-"))
    server: EmbeddedServer | None = None
    try:
        print(f"generating data under {root} ...", flush=True)
        images, video, video_frames = make_data(root / "data", sizes)
        db, server = open_bench_database(root / "home")
        embedder = load_embedder(args.model, device=args.device)
        batches = sizes.model_batches
        # Model-only at torch's default thread count and at the count the pipeline gives the
        # model on CPU (cores - workers); the end-to-end ratio is taken against the faster.
        import torch

        default_threads = torch.get_num_threads()
        pipeline_threads = max(1, (os.cpu_count() or 1) - workers)
        rates: dict[int, float] = {}
        for threads in sorted({default_threads, pipeline_threads}):
            torch.set_num_threads(threads)
            rates[threads] = forward_throughput(embedder, batch_size=args.batch_size, batches=batches)
            print(f"model only, {threads} torch threads: {rates[threads]:.1f} images/s", flush=True)
        torch.set_num_threads(default_threads)
        best_threads = max(rates, key=lambda t: rates[t])
        model_rate = rates[best_threads]
        model_only = {"images": args.batch_size * batches, "seconds": round(args.batch_size * batches / model_rate, 3),
                      "images_per_second": round(model_rate, 2), "torch_threads": best_threads,
                      "by_threads": {str(t): round(r, 2) for t, r in rates.items()}}

        options = IngestOptions(model=args.model, device=embedder.device, batch_size=args.batch_size,
                                workers=workers)
        image_result = bench_ingest(db, embedder, images, options, sizes.images)
        image_result["ratio_to_model_only"] = round(image_result["frames_per_second"] / model_rate, 3)
        print(f"images end-to-end: {image_result}", flush=True)
        video_options = IngestOptions(model=args.model, device=embedder.device, batch_size=args.batch_size,
                                      workers=workers, keyframes=KeyframeOptions("fps", fps=sizes.sample_fps))
        video_result = bench_ingest(db, embedder, video, video_options, video_frames)
        video_result["ratio_to_model_only"] = round(video_result["frames_per_second"] / model_rate, 3)
        print(f"video end-to-end: {video_result}", flush=True)

        copy_result = bench_copy_vs_insert(db.url, sizes)
        print(f"COPY vs INSERT: {copy_result}", flush=True)
        load_result = bench_load_frames(db, sizes, args.batch_size)
        print(f"load_frames: {load_result}", flush=True)
        db.dispose()

        info = machine()
        label = args.label or f"{'cuda' if embedder.device.startswith('cuda') else 'cpu'}-{info['cores']}core"
        result = {
            "label": label, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
            "machine": info, "model": args.model, "device": embedder.device, "batch_size": args.batch_size,
            "workers": workers,
            "data": {"images": sizes.images, "image_size": list(sizes.image_size), "video_seconds": sizes.video_seconds,
                     "video_size": list(sizes.video_size), "video_fps": sizes.video_fps,
                     "sample_fps": sizes.sample_fps},
            "results": {"model_only": model_only, "images": image_result, "video": video_result,
                        "copy_vs_insert": copy_result, "load_frames": load_result},
        }
        print()
        print(f"{'measurement':<34} {'frames/s':>10} {'x model-only':>13}")
        print(f"{'model only':<34} {model_rate:>10.1f} {1.0:>13.2f}")
        print(f"{'end-to-end images':<34} {image_result['frames_per_second']:>10.1f} "
              f"{image_result['ratio_to_model_only']:>13.2f}")
        print(f"{'end-to-end video':<34} {video_result['frames_per_second']:>10.1f} "
              f"{video_result['ratio_to_model_only']:>13.2f}")
        print(f"{'COPY rows/s (1280-d halfvec)':<34} {copy_result['copy_rows_per_second']:>10}")
        print(f"{'INSERT rows/s, one per row':<34} {copy_result['insert_rows_per_second']:>10}")
        print(f"{'COPY / INSERT':<34} {copy_result['copy_over_insert']:>10}")
        if not args.no_write:
            RESULTS.mkdir(parents=True, exist_ok=True)
            out = RESULTS / f"ingest-{label}.json"
            previous = json.loads(out.read_text()) if out.exists() else {}
            if previous.get("notes"):
                result["notes"] = previous["notes"]  # hand-written notes survive a re-run
            out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {out} and {write_markdown()}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
