"""Labelling at scale: k-means, label propagation and near-duplicate grouping, in memory and through the database.

    python benchmarks/bench_labelling.py [--frames 1000000] [--dim 512] [--niter 10] [--db-frames 100000]

In memory (the algorithms alone, no database):
- k-means: faiss spherical k-means (sisyphus_db.label.cluster.kmeans) over `--frames` x `--dim`
  synthetic clustered unit vectors, k = default_k(n) (1,000 at 1M), a bounded `--niter`
  (faiss trains on its default sample of 256 points per centroid, then assigns every vector);
- propagation: label spreading (sisyphus_db.label.spreading) on a synthetic `--frames`-node
  graph with k = 10 edges per frame shaped like a video k-NN graph (8 neighbours within the same
  video at growing distance, 2 to other videos), 50 positive and 50 negative seeds, alpha 0.99,
  with both solvers (conjugate gradients; Zhou's iteration);
- dedup: connected components of the same graph's edges under 0.05 (sisyphus_db.label.components).

Through the database (`--db-frames`, an embedded PostgreSQL in a temporary home or
SISYPHUS_DATABASE_URL): the same kind of graph stored in knn_edges, then the library calls the
CLI makes, timed in their parts: propagate_label (read edges, solve, write label_scores),
find_duplicates (read, group, distances to representatives from the vectors, write) and
cluster_frames (read vectors, k-means, write clusters).

Results: benchmarks/results/labelling.json and labelling.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from sqlalchemy.engine import make_url

from sisyphus_db.ann.synthetic import clustered_vectors
from sisyphus_db.config import Settings
from sisyphus_db.db import migrate
from sisyphus_db.db.database import Database, libpq_url, open_database
from sisyphus_db.label.binary_copy import copy_in
from sisyphus_db.label.cluster import cluster_frames, default_k, kmeans
from sisyphus_db.label.components import duplicate_groups
from sisyphus_db.label.dedup import find_duplicates
from sisyphus_db.label.labels import add_labels
from sisyphus_db.label.propagate import propagate_label
from sisyphus_db.label.spreading import affinity, normalised, seed_vector, spread
from sisyphus_db.store.registry import StoredModel, register_model, upsert_source

logger = logging.getLogger("bench_labelling")
RESULTS = Path(__file__).parent / "results"
VIDEO_LENGTH = 1000
WITHIN, ACROSS = 8, 2
THRESHOLD = 0.05
DEMO_ALPHAS = [0.5, 0.8, 0.9, 0.99]
DEMO_KS = [5, 10]


def video_graph(n: int, seed: int = 0) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Edges (node indexes) of a k = 10 graph shaped like drive videos' k-NN graphs.

    Frame i of a video links to the frames 1..4 before and after it in the same video (distance
    growing with the offset: 0.03 per step plus noise in [0, 0.15), so about 13 % of the direct
    neighbours are under 0.05 and near-duplicates form short runs), and to 2 frames of other
    videos (distance 0.2-0.6; 0.5 % of them are planted cross-video near-duplicates at < 0.05).
    """
    rng = np.random.default_rng(seed)
    node = np.arange(n, dtype=np.int64)
    position = node % VIDEO_LENGTH
    offsets = np.array([-4, -3, -2, -1, 1, 2, 3, 4], dtype=np.int64)
    # Offsets that would leave the video are mirrored into it, so every frame keeps 8 in-video edges.
    within = position[:, None] + offsets[None, :]
    within = np.where((within < 0) | (within >= VIDEO_LENGTH), position[:, None] - offsets[None, :], within)
    targets_within = (node - position)[:, None] + within
    dist_within = 0.03 * np.abs(targets_within - node[:, None]) + rng.uniform(0, 0.15, (n, WITHIN))
    targets_across = rng.integers(0, n, (n, ACROSS))
    dist_across = rng.uniform(0.2, 0.6, (n, ACROSS))
    planted = rng.random((n, ACROSS)) < 0.005
    dist_across[planted] = rng.uniform(0.0, THRESHOLD, int(planted.sum()))
    source = np.repeat(node, WITHIN + ACROSS)
    target = np.concatenate([targets_within, targets_across], axis=1).ravel()
    distance = np.concatenate([dist_within, dist_across], axis=1).ravel().astype(np.float32)
    return source, target, distance


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def bench_memory(n: int, dim: int, niter: int, iterate_cap: int) -> dict[str, Any]:
    out: dict[str, Any] = {"frames": n}
    (source, target, distance), seconds = timed(lambda: video_graph(n))
    out["graph"] = {"edges": int(source.size), "generate_seconds": round(seconds, 2)}
    logger.info("graph: %d edges in %.1f s", source.size, seconds)

    rng = np.random.default_rng(1)
    seeds = rng.choice(n, 100, replace=False)
    (w, sigma), build = timed(lambda: affinity(n, source, target, distance))
    s, norm = timed(lambda: normalised(w))
    y = seed_vector(n, seeds[:50], seeds[50:])
    cg, cg_seconds = timed(lambda: spread(s, y, 0.99, solver="cg", sigma=sigma))
    logger.info("propagation: affinity %.1f s, normalise %.1f s, cg %d iterations %.1f s", build, norm,
                cg.iterations, cg_seconds)
    it, it_seconds = timed(lambda: spread(s, y, 0.99, solver="iterate", max_iter=iterate_cap, sigma=sigma))
    logger.info("propagation: iterate %d iterations %.1f s (converged %s)", it.iterations, it_seconds, it.converged)
    agree = float(np.max(np.abs(cg.scores - it.scores)) / np.max(np.abs(cg.scores)))
    out["propagation"] = {
        "alpha": 0.99, "seeds": 100, "nonzeros": int(s.nnz),
        "affinity_seconds": round(build, 2), "normalise_seconds": round(norm, 2),
        "cg": {"iterations": cg.iterations, "seconds": round(cg_seconds, 2), "residual": cg.residual},
        "iterate": {"iterations": it.iterations, "seconds": round(it_seconds, 2), "converged": it.converged,
                    "max_relative_difference_to_cg": agree},
        "total_cg_seconds": round(build + norm + cg_seconds, 2),
    }
    del w, s

    close = distance < THRESHOLD
    groups, seconds = timed(lambda: duplicate_groups(source[close], target[close]))
    out["dedup"] = {"threshold": THRESHOLD, "pairs": int(close.sum()), "groups": groups.groups,
                    "frames_in_groups": groups.frames, "seconds": round(seconds, 2)}
    logger.info("dedup: %d pairs -> %d groups in %.1f s", close.sum(), groups.groups, seconds)
    del source, target, distance

    vectors, seconds = timed(lambda: clustered_vectors(n, dim, seed=2))
    k = default_k(n)
    logger.info("k-means: %d x %d, k=%d, niter=%d (vectors generated in %.1f s)", n, dim, k, niter, seconds)
    result = kmeans(vectors, k, niter=niter, device="cpu")
    out["kmeans"] = {"vectors": n, "dim": dim, "k": k, "niter": niter, "device": result.device,
                     "training_sample": min(n, 256 * k), "seconds": round(result.seconds, 1),
                     "objective": result.objective}
    logger.info("k-means: %.1f s", result.seconds)
    return out


def load_world(db: Database, n: int, dim: int) -> tuple[StoredModel, npt.NDArray[np.int64]]:
    """n frames in n / 1000 video sources with dim-d clustered vectors, and the video graph as knn_edges."""
    model = register_model(db, name=f"bench-{dim}", dim=dim, weights_sha256="0" * 64, pooling="avg",
                           preprocessing={})
    videos = max(1, n // VIDEO_LENGTH)
    source_ids = [upsert_source(db, uri=f"/bench/video-{v:04d}.mp4", kind="video", tags={}).id for v in range(videos)]
    vectors = clustered_vectors(n, dim, seed=3)
    with db.copy_connection() as conn:
        with conn.cursor().copy("COPY frames (source_id, frame_index, pts_seconds, path, width, height, sha256, "
                                "keyframe_method) FROM STDIN") as copy:
            for start in range(0, n, 100_000):
                stop = min(n, start + 100_000)
                copy.write("".join(
                    f"{source_ids[min(i // VIDEO_LENGTH, videos - 1)]}\t{i}\t{(i % VIDEO_LENGTH) / 2:.2f}\t"
                    f"/bench/frames/{i:08d}.jpg\t224\t224\t{i:064x}\tfps\n" for i in range(start, stop)))
        ids = np.fromiter((r[0] for r in conn.execute("SELECT id FROM frames ORDER BY frame_index")), np.int64, n)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_search import halfvec_copy_rows

    with db.copy_connection() as conn:
        with conn.cursor().copy("COPY embeddings (frame_id, model_id, vec) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
            for start in range(0, n, 50_000):
                copy.write(halfvec_copy_rows(ids[start:start + 50_000], model.id, vectors[start:start + 50_000]))
            copy.write(b"\xff\xff")
    source, target, distance = video_graph(n, seed=4)
    ranks = np.tile(np.arange(1, WITHIN + ACROSS + 1, dtype=np.int32), n)
    with db.copy_connection() as conn:
        copy_in(conn, "knn_edges", [("model_id", "integer"), ("frame_id", "bigint"), ("rank", "integer"),
                                    ("neighbor_id", "bigint"), ("distance", "real")],
                {"model_id": model.id, "frame_id": ids[source], "rank": ranks, "neighbor_id": ids[target],
                 "distance": distance}, int(source.size))
    with psycopg.connect(libpq_url(db.url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE frames, embeddings, knn_edges")
    return model, ids


def bench_database(db: Database, n: int, dim: int, niter: int) -> dict[str, Any]:
    (model, ids), seconds = timed(lambda: load_world(db, n, dim))
    out: dict[str, Any] = {"frames": n, "dim": dim, "edges": n * (WITHIN + ACROSS), "load_seconds": round(seconds, 1)}
    logger.info("database: %d frames and %d edges loaded in %.1f s", n, n * 10, seconds)
    rng = np.random.default_rng(5)
    seeds = rng.choice(ids, 100, replace=False)
    add_labels(db, "bench", [int(i) for i in seeds[:50]])
    add_labels(db, "bench", [int(i) for i in seeds[50:]], positive=False)
    report, seconds = timed(lambda: propagate_label(db, "bench", model, k=10, alpha=0.99))
    out["propagate"] = {"total_seconds": round(seconds, 2), "read_edges_seconds": round(report.read_seconds, 2),
                        "solve_seconds": round(report.solve_seconds, 2),
                        "write_scores_seconds": round(report.write_seconds, 2), "iterations": report.iterations,
                        "rows_written": report.frames}
    logger.info("database propagate: %s", out["propagate"])
    report, seconds = timed(lambda: find_duplicates(db, model, threshold=THRESHOLD))
    out["dedup"] = {"total_seconds": round(seconds, 2), "read_pairs_seconds": round(report.read_seconds, 2),
                    "group_seconds": round(report.group_seconds, 2),
                    "distances_and_write_seconds": round(report.write_seconds, 2), "groups": report.groups,
                    "frames_in_groups": report.frames_in_groups, "cross_video_groups": report.cross_video_groups,
                    "within_video_groups": report.within_video_groups}
    logger.info("database dedup: %s", out["dedup"])
    report, seconds = timed(lambda: cluster_frames(db, model, niter=niter, device="cpu"))
    out["cluster"] = {"total_seconds": round(seconds, 2), "read_vectors_seconds": round(report.read_seconds, 2),
                      "kmeans_seconds": round(report.kmeans_seconds, 2),
                      "write_seconds": round(report.write_seconds, 2), "k": report.k, "niter": niter}
    logger.info("database cluster: %s", out["cluster"])
    return out


def bench_demo(demo_json: Path, alphas: list[float], ks: list[int]) -> dict[str, Any]:
    """Propagation on the demo after one review round: how many frames a person reviews in score order.

    `sisyphus demo --json > demo.json` first (its database lives in $SISYPHUS_HOME/demo; run this with
    SISYPHUS_HOME pointing there). The first query's top 10 are labelled as a reviewer would (hits
    positive, with the query frame; misses negative); then, per alpha and k, the label is propagated
    and the unlabelled frames are read in score order until 50 %, 80 % and all of the remaining
    road-works frames are found, against the random-order expectation n (N + 1) / (R + 1).
    """
    import math

    import sqlalchemy as sa

    from sisyphus_db.label.labels import remove_labels
    from sisyphus_db.search.indexing import resolve_model
    from sisyphus_db.search.knn_graph import build_knn_graph

    demo = json.loads(demo_json.read_text())
    db = open_database(Settings.from_env())
    try:
        with db.transaction() as conn:
            rows = conn.execute(sa.text("SELECT id, pts_seconds FROM frames")).all()
        truth = {i for i, t in rows if any(a <= t <= b for a, b in demo["intervals"])}
        model = resolve_model(db, None)
        build_knn_graph(db, model, k=max(ks))
        hits = [r["frame_id"] for r in demo["results"] if r["hit"]]
        misses = [r["frame_id"] for r in demo["results"] if not r["hit"]]
        positives = list(dict.fromkeys([demo["query"]["frame_id"], *hits]))
        label = "bench-road-works"
        add_labels(db, label, positives)
        add_labels(db, label, misses, positive=False)
        labelled = set(positives) | set(misses)
        remaining = truth - labelled
        unlabelled = len(rows) - len(labelled)
        goals = {"50%": math.ceil(0.5 * len(remaining)), "80%": math.ceil(0.8 * len(remaining)),
                 "100%": len(remaining)}
        out: dict[str, Any] = {"frames": len(rows), "road_works": len(truth), "labelled_positive": len(positives),
                               "labelled_negative": len(misses), "remaining": len(remaining),
                               "unlabelled": unlabelled,
                               "random_order": {g: round(n * (unlabelled + 1) / (len(remaining) + 1), 1)
                                                for g, n in goals.items()}, "runs": []}
        for alpha in alphas:
            for k in ks:
                report = propagate_label(db, label, model, k=k, alpha=alpha)
                with db.transaction() as conn:
                    order = conn.execute(sa.text("SELECT frame_id FROM label_scores WHERE label = :n "
                                                 "ORDER BY score DESC, frame_id"), {"n": label}).scalars().all()
                order = [f for f in order if f not in labelled]
                found_at = [n for n, f in enumerate(order, 1) if f in remaining]
                out["runs"].append({"alpha": alpha, "k": k, "iterations": report.iterations,
                                    "precision_at_10": sum(1 for f in order[:10] if f in remaining) / 10,
                                    "reviewed": {g: found_at[n - 1] for g, n in goals.items()}})
                logger.info("demo: %s", out["runs"][-1])
        remove_labels(db, label)
        # Rare scenes as small clusters: where do the road-works frames land in `sisyphus cluster`'s list?
        report = cluster_frames(db, model, device="cpu")
        with db.transaction() as conn:
            members = conn.execute(sa.text("SELECT frame_id, cluster FROM clusters WHERE model_id = :m"),
                                   {"m": model.id}).all()
        position = {c.cluster: i + 1 for i, c in enumerate(report.clusters)}
        sizes = {c.cluster: c.size for c in report.clusters}
        hits: dict[int, int] = {}
        for frame_id, cluster in members:
            if frame_id in truth:
                hits[cluster] = hits.get(cluster, 0) + 1
        out["clusters"] = {"k": report.k, "road_works_clusters": sorted(
            ({"cluster": c, "listed": position[c], "size": sizes[c], "road_works": n} for c, n in hits.items()),
            key=lambda entry: entry["listed"])}
        return out
    finally:
        db.dispose()


def machine() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).parent / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import faiss

    info: dict[str, Any] = module.machine()
    info["faiss"] = faiss.__version__
    return info


def markdown(result: dict[str, Any]) -> str:
    info, mem, dbr = result["machine"], result["memory"], result.get("database")
    p, d, k = mem["propagation"], mem["dedup"], mem["kmeans"]
    lines = [
        "# Labelling benchmark: k-means, label propagation, near-duplicate groups", "",
        f"Machine: {info.get('cpu')}, {info.get('usable_cpus')} usable cores, {info.get('memory_gib')} GiB, "
        f"GPU: {info.get('gpu') or 'none'}; Python {info.get('python')}, faiss {info.get('faiss')}. "
        f"Run {result.get('date', '')}; load average at the start "
        f"{[round(x, 1) for x in info.get('load_average') or []]}: other jobs shared the CPU during this run, "
        "so the times are upper bounds for an idle machine.", "",
        f"Command: `{result['command']}`", "",
        "The graph is synthetic, shaped like a video k-NN graph: each frame links to the 4 frames before and after "
        "it in its video (1,000 frames per video) and to 2 frames of other videos (0.5 % of those are planted "
        "near-duplicates); the vectors are synthetic clustered unit vectors (sisyphus_db.ann.synthetic). k-means "
        "runs a bounded number of iterations (--niter); each further iteration costs about the same.", "",
        f"## In memory ({mem['frames']:,} frames)", "",
        "| step | figure |", "|---|---|",
        f"| k-means {k['vectors']:,} x {k['dim']}, k={k['k']}, niter={k['niter']} (bounded), {k['device']}, "
        f"trained on {k['training_sample']:,} sampled vectors then all assigned | {k['seconds']} s |",
        f"| propagation graph: {mem['graph']['edges']:,} edges, {p['nonzeros']:,} non-zeros after symmetrising | "
        f"affinity {p['affinity_seconds']} s + normalise {p['normalise_seconds']} s |",
        f"| propagation, conjugate gradients (alpha 0.99, 100 seeds) | {p['cg']['iterations']} iterations, "
        f"{p['cg']['seconds']} s (total with the matrix {p['total_cg_seconds']} s) |",
        f"| propagation, Zhou's iteration (same fixed point) | {p['iterate']['iterations']} iterations, "
        f"{p['iterate']['seconds']} s (converged: {p['iterate']['converged']}; max difference to cg "
        f"{p['iterate']['max_relative_difference_to_cg']:.1e}) |",
        f"| dedup: components of {d['pairs']:,} pairs under {d['threshold']} | {d['groups']:,} groups, "
        f"{d['frames_in_groups']:,} frames, {d['seconds']} s |", "",
    ]
    demo = result.get("demo")
    if demo:
        lines += [
            f"## Propagation on the demo ({demo['frames']} key frames, {demo['road_works']} road works)", "",
            f"After the first query's top 10 are reviewed ({demo['labelled_positive']} positives with the query "
            f"frame, {demo['labelled_negative']} negatives), the label is propagated and the {demo['unlabelled']} "
            f"unlabelled frames are read in score order; frames read to find 50 % / 80 % / all of the "
            f"{demo['remaining']} remaining road-works frames (random order: "
            f"{' / '.join(str(v) for v in demo['random_order'].values())}). One demo run at its defaults "
            f"(`sisyphus demo --json > demo.json`, then `{demo.get('command', '')}` with SISYPHUS_HOME at the "
            "demo's home): a small sample, not a general ranking of the settings.", "",
            "| alpha | k | 50 % | 80 % | all | precision@10 |", "|---:|---:|---:|---:|---:|---:|",
            *[f"| {r['alpha']} | {r['k']} | {r['reviewed']['50%']} | {r['reviewed']['80%']} | "
              f"{r['reviewed']['100%']} | {r['precision_at_10']:.1f} |" for r in demo["runs"]], "",
        ]
        if "clusters" in demo:
            listed = demo["clusters"]["road_works_clusters"]
            lines += [f"`sisyphus cluster` on the demo (k={demo['clusters']['k']}): the road-works frames fall in "
                      "these clusters (position in the list, smallest and most isolated first; size; road-works "
                      "frames): " + ", ".join(f"#{c['listed']} ({c['size']} frames, {c['road_works']} road works)"
                                              for c in listed) + ".", ""]
    if dbr:
        lines += [
            f"## Through PostgreSQL ({dbr['frames']:,} frames, {dbr['edges']:,} edges in knn_edges, "
            f"{dbr['dim']}-d vectors)", "",
            "| command (library call) | total | parts |", "|---|---:|---|",
            f"| `sisyphus propagate` | {dbr['propagate']['total_seconds']} s | read edges "
            f"{dbr['propagate']['read_edges_seconds']} s, solve {dbr['propagate']['solve_seconds']} s "
            f"({dbr['propagate']['iterations']} cg iterations), write {dbr['propagate']['rows_written']:,} "
            f"label_scores rows {dbr['propagate']['write_scores_seconds']} s |",
            f"| `sisyphus dedup` | {dbr['dedup']['total_seconds']} s | read pairs {dbr['dedup']['read_pairs_seconds']}"
            f" s, group {dbr['dedup']['group_seconds']} s, distances to representatives + write "
            f"{dbr['dedup']['distances_and_write_seconds']} s ({dbr['dedup']['groups']:,} groups, "
            f"{dbr['dedup']['frames_in_groups']:,} frames; {dbr['dedup']['cross_video_groups']:,} cross-video) |",
            f"| `sisyphus cluster` (niter {dbr['cluster']['niter']}) | {dbr['cluster']['total_seconds']} s | read "
            f"vectors {dbr['cluster']['read_vectors_seconds']} s, k-means (k={dbr['cluster']['k']}) "
            f"{dbr['cluster']['kmeans_seconds']} s, write {dbr['cluster']['write_seconds']} s |",
            "", f"Loading the test data (frames, embeddings, knn_edges by COPY): {dbr['load_seconds']} s.", "",
        ]
        if dbr["frames"] < mem["frames"]:
            scale = mem["frames"] / dbr["frames"]
            propagate_io = dbr["propagate"]["read_edges_seconds"] + dbr["propagate"]["write_scores_seconds"]
            dedup_io = dbr["dedup"]["read_pairs_seconds"] + dbr["dedup"]["distances_and_write_seconds"]
            lines += [f"Extrapolated to {mem['frames']:,} frames (x{scale:g}, the reads and writes are linear in "
                      f"rows): propagate I/O ~{round(scale * propagate_io)} s, dedup I/O ~{round(scale * dedup_io)} s "
                      "(an estimate, not measured).", ""]
    return "\n".join(lines)


def rewrite_markdown(out: Path = RESULTS) -> None:
    """Regenerate labelling.md from labelling.json (after a change to the report's wording)."""
    (out / "labelling.md").write_text(markdown(json.loads((out / "labelling.json").read_text())) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--niter", type=int, default=10)
    parser.add_argument("--iterate-cap", type=int, default=5000, help="most steps of Zhou's iteration")
    parser.add_argument("--db-frames", type=int, default=100_000, help="0 skips the database part")
    parser.add_argument("--db-dim", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="100k in memory, 20k through the database")
    parser.add_argument("--demo", type=Path, default=None, help="the JSON of `sisyphus demo --json`: also measure "
                        "propagation on the demo's database (SISYPHUS_HOME must point at the demo's home)")
    parser.add_argument("--demo-only", action="store_true", help="with --demo: update only the demo section of "
                        "the existing results")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.db_frames = 100_000, 20_000
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.demo is not None and args.demo_only:
        result = json.loads((args.out / "labelling.json").read_text())
        result["demo"] = bench_demo(args.demo, DEMO_ALPHAS, DEMO_KS)
        result["demo"]["command"] = "python benchmarks/bench_labelling.py " + " ".join(argv or sys.argv[1:])
        (args.out / "labelling.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "labelling.md").write_text(markdown(result) + "\n")
        return 0
    result: dict[str, Any] = {"command": "python benchmarks/bench_labelling.py " + " ".join(argv or sys.argv[1:]),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine()}
    result["memory"] = bench_memory(args.frames, args.dim, args.niter, args.iterate_cap)
    if args.db_frames:
        result["database"] = run_database(args)
    if args.demo is not None:
        result["demo"] = bench_demo(args.demo, DEMO_ALPHAS, DEMO_KS)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labelling.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "labelling.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0


def run_database(args: argparse.Namespace) -> dict[str, Any]:
    external = os.environ.get("SISYPHUS_DATABASE_URL")
    home = Path(tempfile.mkdtemp(prefix="sisyphus-bench-labelling-"))
    server = None
    try:
        if external is None:
            from sisyphus_db.db.embedded import EmbeddedServer

            server = EmbeddedServer(home)
            server.start()
        admin = libpq_url(external) if external else server.socket_url("postgres")  # type: ignore[union-attr]
        name = "bench_labelling"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = make_url(admin).set(database=name).render_as_string(hide_password=False)
        db = open_database(Settings(home=home, database_url=url), require_schema=False)
        try:
            migrate.upgrade(db)
            return bench_database(db, args.db_frames, args.db_dim, args.niter)
        finally:
            db.dispose()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
