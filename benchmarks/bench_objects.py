"""Find this object: eval instance per method and scale, storage and build cost of regions and bow,
search latency per method at 100k frames.

    python benchmarks/bench_objects.py [--objects 6] [--scenes 12] [--per-object 2] [--frames 100000]
                                       [--quick] [--out benchmarks/results]

Part 1 (real model, real PostgreSQL): generated objects (textured RGBA shapes) pasted into
generated street-like scenes (640 x 360) at 10/20/30 % of the width; `eval instance`'s
protocol on a throw-away database; then the storage of each table/file per frame and the
time per frame of ingest, `regions build` and `bow build`.
Part 2 (synthetic vectors, in memory): latency of the search step of each method at
`--frames` frames: pooled (faiss IVF over 1280-d frame vectors), regions (30 regions a
frame, 64-d synthetic vectors so 3M of them fit this machine; faiss IVF, exact rerank,
best region per frame), bow (inverted file of 196 words a frame over 1000 and 25000
words, then the spatial re-ranking of the top 100 assignment maps).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _size(db, table: str) -> int:
    import sqlalchemy as sa

    with db.transaction() as conn:
        # A partitioned table (embeddings is split by model) holds its rows in its partitions.
        return int(conn.execute(sa.text(
            f"SELECT pg_total_relation_size('{table}') + coalesce((SELECT sum(pg_total_relation_size(inhrelid)) "
            f"FROM pg_inherits WHERE inhparent = '{table}'::regclass), 0)")).scalar_one())


def part_eval(args: argparse.Namespace, root: Path) -> dict:
    import sqlalchemy as sa

    from sisyphus_db.config import Settings
    from sisyphus_db.evaluate.instance import (
        InstanceOptions,
        make_ground_truth,
        run_instance_eval,
        throwaway_database,
    )
    from sisyphus_db.evaluate.instance_data import generate_objects, generate_scenes
    from sisyphus_db.store.indexes import list_indexes

    objects = generate_objects(root / "objects", args.objects, seed=0)
    scenes = generate_scenes(root / "scenes", args.scenes, seed=1)
    options = InstanceOptions(per_object=args.per_object, methods=("global", "regions", "bow", "bow+spatial+expansion"),
                              device="cpu")
    truth = make_ground_truth(objects, scenes, options, root / "frames")
    settings = Settings.from_env(home=str(root / "home"))
    with throwaway_database(settings) as db:
        report = run_instance_eval(db, objects, truth, options, root / "frames")
        frames = report.frames
        storage = {table: _size(db, table) / frames for table in ("frames", "embeddings", "regions", "bow_frames")}
        with db.transaction() as conn:
            regions = int(conn.execute(sa.text("SELECT count(*) FROM regions")).scalar_one())
            vocabulary = conn.execute(sa.text("SELECT path, words, descriptors, build_seconds FROM bow_vocabularies"
                                              )).one()
        files = {f"{r.kind}/{r.backend}": os.path.getsize(str(r.path)) / frames for r in list_indexes(db) if r.path}
        files["bow vocabulary"] = os.path.getsize(vocabulary[0]) / frames
    seconds = report.seconds
    return {"eval": report.to_json(), "frames": frames, "regions_per_frame": regions / frames,
            "storage_bytes_per_frame": {**storage, **{f"file {k}": v for k, v in files.items()}},
            "seconds_per_frame": {"ingest (decode, embed, store)": seconds["ingest"] / frames,
                                  "regions build + region index": seconds["regions"] / frames,
                                  "bow build (vocabulary, assignment, inverted file)": seconds["bow"] / frames},
            "vocabulary": {"words": int(vocabulary[1]), "descriptors": int(vocabulary[2]),
                           "build_seconds": float(vocabulary[3])}}


def _timed(fn, repeats: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1000.0


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _global_latency(rng: np.random.Generator, n: int, queries: int) -> float:
    """Pooled: 1280-d frame vectors, IVF1024,Flat, nprobe 16, k=10."""
    import faiss

    vectors = _unit(rng.normal(size=(n, 1280)).astype(np.float32))
    index = faiss.index_factory(1280, "IVF1024,Flat")
    index.train(vectors[rng.choice(n, min(n, 1024 * 40), replace=False)])
    index.add(vectors)
    index.nprobe = 16
    q = _unit(rng.normal(size=(queries, 1280)).astype(np.float32))
    return _timed(lambda: [index.search(x[None], 10) for x in q], 1) / queries


def _regions_latency(rng: np.random.Generator, n: int, queries: int, per: int = 30, d: int = 64) -> float:
    """Regions: `per` a frame, d-d synthetic, IVF1024,Flat nprobe 8; 80 candidates re-ranked and grouped."""
    import faiss

    from sisyphus_db.ann.search import exact_rerank

    regions = _unit(rng.normal(size=(n * per, d)).astype(np.float32))
    frame_of = np.repeat(np.arange(n), per)
    index = faiss.index_factory(d, "IVF1024,Flat")
    index.train(regions[rng.choice(regions.shape[0], min(regions.shape[0], 1024 * 40), replace=False)])
    index.add(regions)
    index.nprobe = 8
    q = _unit(rng.normal(size=(queries, d)).astype(np.float32))

    def region_search(x: np.ndarray) -> None:
        _, found = index.search(x[None], 80)  # k=10 frames x 8 regions, as the method asks
        ids = found[0][found[0] >= 0]
        ranked, dist = exact_rerank(x, ids, regions[ids], ids.size)
        seen: dict[int, float] = {}
        for r, value in zip(ranked.tolist(), dist.tolist(), strict=True):
            seen.setdefault(int(frame_of[r]), value)

    return _timed(lambda: [region_search(x) for x in q], 1) / queries


def _bow_latency(rng: np.random.Generator, n: int, queries: int, words: int) -> tuple[float, float, float]:
    """Inverted file over n frames of 196 Zipf-distributed words; spatial re-ranking of 100 maps."""
    from sisyphus_db.local.bow.invfile import build_inverted_file, histogram
    from sisyphus_db.local.bow.spatial import best_window

    p = 1.0 / np.arange(1, words + 1) ** 0.8
    p /= p.sum()
    maps = [rng.choice(words, size=196, p=p).astype(np.int32) for _ in range(n)]
    started = time.perf_counter()
    inverted = build_inverted_file(np.arange(n, dtype=np.int64), maps, words)
    build = time.perf_counter() - started
    qh = [histogram(rng.choice(words, size=49, p=p).astype(np.int32), words) for _ in range(queries)]
    score = _timed(lambda: [inverted.score(h) for h in qh], 1) / queries
    top = [maps[i].reshape(14, 14) for i in range(100)]
    spatial = _timed(lambda: [best_window(g, qh[0], inverted.idf) for g in top], 1)
    return score, spatial, build


def part_latency(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    n, queries = args.frames, args.queries
    out = {"global (faiss IVF1024,Flat nprobe 16, 1280-d, k=10)": _global_latency(rng, n, queries),
           f"regions (faiss IVF1024,Flat nprobe 8 over {n * 30} 64-d regions, rerank 80, group)":
           _regions_latency(rng, n, queries)}
    for words in (1000, 25000):
        score, spatial, build = _bow_latency(rng, n, queries, words)
        out[f"bow {words} words: inverted file scoring over {n} frames"] = score
        out[f"bow {words} words: spatial re-ranking of the top 100"] = spatial
        out[f"bow {words} words: inverted file build"] = build * 1000.0
    return out


def markdown(results: dict) -> str:
    """The results as benchmarks/results/objects.md."""
    lines = ["# Find this object: regions, bag of local features, class focus", "",
             (f"Machine: {results['machine']['cores']} cores ({results['machine']['cpu']}), Python "
             f"{results['machine']['python']}; {results['machine']['note']}. Written by "
             "`python benchmarks/bench_objects.py`."), ""]
    ev = results.get("eval")
    if ev:
        report = ev["eval"]
        lines += ["## eval instance on generated objects and scenes", "",
                  (f"{report['queries']} generated objects (textured RGBA shapes) pasted into {report['per_object']} "
                  f"generated 640 x 360 street-like scenes each at {', '.join(f'{s:g}' for s in report['scales'])} "
                  f"of the scene width, plus the untouched scenes as distractors: {report['frames']} frames, "
                  f"model {report['model']}. mAP over all frames; r@10 = share of the object's frames of that "
                  "scale in the first 10; IoU = box of a correct hit in the first 10 against the pasted box."), "",
                  "| method | mAP | r@10 | IoU | " + " | ".join(f"mAP / r@10 / IoU at {s:g}" for s in report["scales"])
                  + " |", "|---" * (4 + len(report["scales"])) + "|"]
        for method, fig in report["methods"].items():
            def f(v: float | None) -> str:
                return "-" if v is None else f"{v:.3f}"
            cells = [f"{f(x['map'])} / {f(x['r@10'])} / {f(x['iou'])}" for x in fig["per_scale"].values()]
            lines.append(f"| {method} | {f(fig['map'])} | {f(fig['r@10'])} | {f(fig['iou'])} | " + " | ".join(cells)
                         + " |")
        lines += ["", "## Storage and build time per frame", "",
                  (f"{ev['regions_per_frame']:.0f} regions a frame (4 scales); vocabulary of "
                  f"{ev['vocabulary']['words']} words trained on {ev['vocabulary']['descriptors']} descriptors in "
                  f"{ev['vocabulary']['build_seconds']:.1f} s (feature maps of the sample included)."), "",
                  "| what | bytes per frame |", "|---|---|"]
        lines += [f"| {k} | {v:,.0f} |" for k, v in ev["storage_bytes_per_frame"].items()]
        lines += ["", "| step | seconds per frame |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in ev["seconds_per_frame"].items()]
    lat = results.get("latency_ms")
    if lat:
        lines += ["", "## Search latency per method (synthetic vectors, in memory)", "",
                  ("The search step of each method on synthetic data; the embedding of the query image, the SQL "
                  "metadata join and the stored run (the same for every method) are not included."), "",
                  "| step | ms |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in lat.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--per-object", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--merge", type=Path, help="Earlier objects.json whose parts this run does not redo.")
    args = parser.parse_args()
    if args.quick:
        args.objects, args.scenes, args.per_object, args.frames = 2, 3, 1, 10_000
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                "python": sys.version.split()[0],
                                "note": "a 2-core machine shared with other jobs: times are upper bounds"}}
    if args.merge is not None:
        results = {**json.loads(args.merge.read_text()), "machine": results["machine"]}
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_eval:
        with tempfile.TemporaryDirectory(prefix="bench-objects-") as tmp:
            results["eval"] = part_eval(args, Path(tmp))
        (args.out / "objects.json").write_text(json.dumps(results, indent=1))  # kept if the next part dies
    if not args.skip_latency:
        results["latency_ms"] = part_latency(args)
    (args.out / "objects.json").write_text(json.dumps(results, indent=1))
    (args.out / "objects.md").write_text(markdown(results))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
