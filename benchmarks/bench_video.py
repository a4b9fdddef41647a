"""Video-level costs and quality on generated clips: segments, colour, hashes, sound, video search, videocopy.

    python benchmarks/bench_video.py [--videos 6] [--seconds 30] [--queries 10]

Generates `--videos` clips of `--seconds` each (320 x 240, 10 frames/s, a new look every
2 s, a sound track of tones), ingests them at 2 frames/s with efficientnet-lite0 into a
fresh embedded database, then times each video-level build and measures what it stores.
Per video hour figures are extrapolated linearly from these few minutes of generated
video (the builds are per video and per frame, so they scale with the hours; the
generated footage compresses and decodes faster than real drive video). Then `search
--video` latency on excerpts (segments compared exactly and through a Flat faiss sidecar)
and `eval videocopy` on the same clips. Results: benchmarks/results/video.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from sisyphus_db.config import Settings
from sisyphus_db.db import migrate
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.ingest.messages import KeyframeOptions
from sisyphus_db.ingest.pipeline import IngestOptions, run_ingest
from sisyphus_db.store.registry import find_model

RESULTS = Path(__file__).resolve().parent / "results"


def _size(db: Database, sql: str) -> int:
    with db.transaction() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one() or 0)


def _timed(label: str, results: dict[str, Any], call: Any) -> Any:
    started = time.perf_counter()
    value = call()
    results[label] = round(time.perf_counter() - started, 3)
    print(f"{label}: {results[label]:.2f} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--keep-eval", action="store_true", help="With --skip-eval: keep the videocopy figures of "
                        "the previous results/video.json (same data generator and sizes).")
    args = parser.parse_args()

    from sisyphus_db.embed.embedder import load_embedder
    from sisyphus_db.evaluate.videocopy import VideoCopyOptions, run_videocopy
    from sisyphus_db.search.indexing import build_faiss_index
    from sisyphus_db.temporal.audio_store import build_audio
    from sisyphus_db.temporal.colour_build import build_colour
    from sisyphus_db.temporal.hash_store import build_hashes
    from sisyphus_db.temporal.segments import build_segments
    from sisyphus_db.temporal.synthetic_av import write_av_clip
    from sisyphus_db.temporal.transforms import make_copy
    from sisyphus_db.temporal.video_query import clip_from_video
    from sisyphus_db.temporal.video_search import search_video

    work = Path(tempfile.mkdtemp(prefix="sisyphus-bench-video-"))
    db = open_database(Settings(home=work / "home"), require_schema=False)
    migrate.upgrade(db)
    folder = work / "videos"
    rng = np.random.default_rng(0)
    videos = [write_av_clip(folder / f"clip{i:02d}.mp4", args.seconds,
                            [(s, s + 2.0, float(rng.choice([220, 440, 880, 1500, 3000]))) for s in
                             np.arange(0.0, args.seconds, 2.0)], seed=i, size=(320, 240))
              for i in range(args.videos)]
    total_seconds = args.videos * args.seconds
    hours = total_seconds / 3600.0
    results: dict[str, Any] = {"videos": args.videos, "seconds_each": args.seconds, "video_seconds": total_seconds}
    load_embedder("efficientnet-lite0", device="cpu")  # loaded before timing, as a running service has it
    summary = _timed("ingest_s", results, lambda: run_ingest(db, videos, IngestOptions(
        device="cpu", keyframes=KeyframeOptions(method="fps", fps=2.0), workers=1)))
    results["frames"] = summary.frames
    model = find_model(db, summary.model)
    assert model is not None
    segments = _timed("segments_build_s", results, lambda: build_segments(db, model, window=4.0))
    results["segments"] = segments.segments_total
    colour = _timed("colour_build_s", results, lambda: build_colour(db, device="cpu"))
    results["colour_vectors"] = colour.total
    hashes = _timed("hashes_build_s", results, lambda: build_hashes(db))
    results["hashes"] = hashes.total
    audio = _timed("audio_build_s", results, lambda: build_audio(db))
    results["audio_seconds"] = audio.total
    colour_model = find_model(db, "colour")
    assert colour_model is not None
    storage = {
        "frame embeddings (efficientnet-lite0 halfvec)": _size(db, "SELECT sum(pg_column_size(e.*)) FROM embeddings e "
                                                           f"WHERE model_id = {model.id}"),
        "segments (table + index)": _size(db, "SELECT pg_total_relation_size('segments')"),
        "colour palettes (rows in embeddings)": _size(db, "SELECT sum(pg_column_size(e.*)) FROM embeddings e "
                                                  f"WHERE model_id = {colour_model.id}"),
        "frame_hashes (table + 2 HNSW indexes)": _size(db, "SELECT pg_total_relation_size('frame_hashes')"),
        "audio_segments (table + index)": _size(db, "SELECT pg_total_relation_size('audio_segments')"),
    }
    results["storage_bytes"] = storage
    results["per_video_hour"] = {
        "build_seconds": {name: round(results[key] / hours, 1) for name, key in
                          (("ingest", "ingest_s"), ("segments", "segments_build_s"), ("colour", "colour_build_s"),
                           ("hashes", "hashes_build_s"), ("sound", "audio_build_s"))},
        "slowdown_vs_ingest": {name: round(results[key] / results["ingest_s"], 3) for name, key in
                               (("segments", "segments_build_s"), ("colour", "colour_build_s"),
                                ("hashes", "hashes_build_s"), ("sound", "audio_build_s"))},
        "storage_mb": {name: round(value / hours / 1e6, 2) for name, value in storage.items()},
    }

    # search --video latency on 6 s excerpts, segments exact and through a faiss sidecar
    queries = []
    for number in range(args.queries):
        truth = make_copy(videos[number % len(videos)], "excerpt", work / f"q{number}.mp4", rng=rng,
                          min_excerpt=6.0, max_excerpt=6.0)
        queries.append((truth, clip_from_video(truth.path, model, fps=2.0, device="cpu")))
    latency: dict[str, Any] = {}
    for label in ("exact segments", "faiss segments (Flat)"):
        if label.startswith("faiss"):
            build_faiss_index(db, model, factory="Flat", kind="segments")
        times, correct = [], 0
        for truth, clip in queries:
            started = time.perf_counter()
            outcome = search_video(db, model, clip, k=5, save=False)
            times.append(1000.0 * (time.perf_counter() - started))
            correct += int(bool(outcome.hits) and outcome.hits[0].source_uri == truth.source_uri)
        latency[label] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                          "p95_ms": round(float(np.percentile(times, 95)), 1), "r@1": correct / len(queries)}
        print(label, latency[label], flush=True)
    results["search_video"] = {"queries": len(queries), "query": "6 s excerpt decoded at 2 frames/s (decode and "
                               "embedding not timed)", **latency}
    if not args.skip_eval:
        report = _timed("videocopy_s", results, lambda: run_videocopy(db, videos, VideoCopyOptions(device="cpu")))
        results["videocopy"] = report.to_json()
    elif args.keep_eval and (RESULTS / "video.json").exists():
        previous = json.loads((RESULTS / "video.json").read_text())
        if "videocopy" in previous:
            results["videocopy"] = previous["videocopy"]
            results["videocopy_s"] = previous.get("videocopy_s")
            results["videocopy_date"] = previous.get("date")
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "note": "shared 2-core machine: other jobs ran at the same time, so times are upper bounds"}
    results["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    db.dispose()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "video.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "video.md").write_text(render(results))
    print(f"wrote {RESULTS / 'video.md'}")


def render(r: dict[str, Any]) -> str:
    per = r["per_video_hour"]
    lines = [
        "# Video benchmark", "",
        "Written by `python benchmarks/bench_video.py` (figures also in `video.json`).", "",
        (f"{r['date']}; {r['machine']['platform']}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, "
        "no GPU. **Other jobs shared the CPU during the run: times are upper bounds.**"), "",
        (f"Data: {r['videos']} generated videos of {r['seconds_each']:g} s (320 x 240, 10 frames/s, a new look every 2 s, "
        f"tones as sound), {r['frames']} frames ingested at 2 frames/s with efficientnet-lite0 on the CPU. Per video "
        f"hour figures are **extrapolated linearly** from these {r['video_seconds'] / 60:.0f} minutes."), "",
        "## Build time and storage per video hour", "",
        "| step | seconds here | s per video hour | x ingest time | storage MB per video hour |",
        "|---|---:|---:|---:|---:|",
        (f"| ingest (decode, embed, COPY) | {r['ingest_s']:.1f} | {per['build_seconds']['ingest']:.0f} | 1.00 | "
        f"{per['storage_mb']['frame embeddings (efficientnet-lite0 halfvec)']:.2f} (frame vectors) |"),
    ]
    names = (("segments", "segments_build_s", "segments (table + index)"),
             ("colour", "colour_build_s", "colour palettes (rows in embeddings)"),
             ("hashes", "hashes_build_s", "frame_hashes (table + 2 HNSW indexes)"),
             ("sound", "audio_build_s", "audio_segments (table + index)"))
    for name, key, storage in names:
        lines.append(f"| {name} | {r[key]:.1f} | {per['build_seconds'][name]:.0f} | "
                     f"{per['slowdown_vs_ingest'][name]:.2f} | {per['storage_mb'][storage]:.2f} |")
    search = r["search_video"]
    lines += ["", (f"Rows: {r['segments']} segments (4 s windows, stride 2 s), {r['colour_vectors']} colour palettes, "
              f"{r['hashes']} frame hashes, {r['audio_seconds']} seconds of sound."), "",
              "## search --video latency", "",
              f"{search['queries']} queries, {search['query']}.", "",
              "| segments through | p50 ms | p95 ms | r@1 |", "|---|---:|---:|---:|"]
    for label in ("exact segments", "faiss segments (Flat)"):
        lines.append(f"| {label} | {search[label]['p50_ms']:.0f} | {search[label]['p95_ms']:.0f} | "
                     f"{search[label]['r@1']:.2f} |")
    if "videocopy" in r:
        vc = r["videocopy"]
        when = f" (measured {r['videocopy_date']}, an earlier run on the same generated data)" \
            if r.get("videocopy_date") else ""
        lines += ["", "## eval videocopy on the generated clips", "",
                  f"{vc['videos']} videos x 7 transformations = {vc['queries']} queries (window 3 s, 2 frames/s){when}.",
                  "",
                  "| transformation | " + " | ".join(f"{m} r@1 / mAP / tIoU" for m in vc["results"]) + " |",
                  "|---|" + "---:|" * len(vc["results"])]
        for name in next(iter(vc["results"].values())):
            cells = []
            for method in vc["results"]:
                v = vc["results"][method][name]
                cells.append("-" if v["r@1"] is None else f"{v['r@1']:.2f} / {v['map']:.2f} / {v['tiou']:.2f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Query time (ms, decode and embedding excluded): " + ", ".join(
            f"{m} {t:.0f}" for m, t in vc["query_ms"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
