"""Active indexing on this CPU: passive vs activated references, copy detection with small PQ codes.

    python benchmarks/bench_activate.py [--datasets photos,generated,distinct] [--references 160]
        [--factory IVF4,PQ16x4] [--iterations 10] [--psnr 43] [--photos DIR]
        [--photo-folder DIR --photo-source TEXT --short-side 256]

For each data set the `eval copydetect --activate` protocol runs twice on the same
references: with the exact rerank of faiss candidates and without it (ranking by the
index's own quantized distances, the paper's setting); the activated images of the
first run are reused by the second (same work folder, resumed). Data sets:

- `photos`: real photos shipped with scikit-image (`skimage.data`: astronaut, coffee,
  chelsea, rocket, motorcycle, ...; taken from an installed skimage, or from --photos DIR).
  A handful of photos is too few for an IVF4 index (156 training vectors), so the
  reference set is random crops (40-90 % of each side) of them, resized to 256x192:
  crops of the same photo are near-duplicates of each other, which makes the task harder
  than the paper's distinct images.
- `generated`: `write_test_image` pictures (smooth random blobs), as the tests use.
- `distinct`: the first --references photos (sorted by path) of --photo-folder, each a
  different picture, resized so that the short side is --short-side and saved as PNG (so
  that the activated copies are written losslessly); --photo-source says where they came
  from and is recorded with the figures.

Each data set's figures are stored under `<data set> <factory>` with their own settings,
so runs with other factories or data sets add to activate.json instead of replacing it.

Uses SISYPHUS_DATABASE_URL when set, else an embedded PostgreSQL under a temporary home.
Writes benchmarks/results/activate.json and activate.md. Other jobs shared the CPU.
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from random import Random
from typing import Any

from PIL import Image

from sisyphus_db.activate.optimise import ActivationSettings
from sisyphus_db.config import Settings
from sisyphus_db.db import migrate
from sisyphus_db.db.database import open_database
from sisyphus_db.evaluate.copydetect import CopyDetectOptions
from sisyphus_db.evaluate.copydetect_active import run_copydetect_active
from sisyphus_db.evaluate.retrieval import BackendSpec
from sisyphus_db.media.synthetic import write_test_image

RESULTS = Path(__file__).resolve().parent / "results"
PHOTO_NAMES = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
               "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "coins.png", "camera.png", "brick.png",
               "gravel.png", "grass.png", "moon.png")
SIZE = (256, 192)


def photo_folder(given: str | None) -> Path | None:
    if given:
        return Path(given)
    try:
        import skimage
    except ImportError:
        return None
    return Path(skimage.__file__).parent / "data"


def make_photo_crops(folder: Path, out: Path, count: int, seed: int = 0) -> list[str]:
    names = [name for name in PHOTO_NAMES if (folder / name).is_file()]
    rng = Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        name = names[number % len(names)]
        with Image.open(folder / name) as opened:
            image = opened.convert("RGB")
        width, height = image.size
        w, h = int(width * rng.uniform(0.4, 0.9)), int(height * rng.uniform(0.4, 0.9))
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        image.crop((left, top, left + w, top + h)).resize(SIZE, Image.Resampling.BILINEAR).save(
            out / f"crop{number:04d}.png")
    return names


def make_distinct_photos(folder: Path, out: Path, count: int, short_side: int) -> list[Path]:
    """The first `count` photos under folder (sorted), short side resized to short_side, as PNG."""
    found = sorted(path for path in folder.rglob("*")
                   if path.suffix.lower() in (".jpg", ".jpeg", ".png") and path.is_file())
    if len(found) < count:
        raise SystemExit(f"--photo-folder {folder} holds {len(found)} photos, --references asks for {count}")
    out.mkdir(parents=True, exist_ok=True)
    for number, path in enumerate(found[:count]):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        scale = short_side / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image.resize(size, Image.Resampling.BICUBIC).save(out / f"photo{number:04d}.png")
    return found[:count]


def make_generated(out: Path, count: int) -> None:
    for number in range(count):
        write_test_image(out / f"gen{number:04d}.png", seed=number, size=SIZE)


def overall(block: dict[str, Any], backend: str) -> dict[str, float]:
    result = next(r for r in block["results"] if r["backend"] == backend)
    return {key: round(result["overall"][key], 4) for key in ("r@1", "r@10", "uap")}


def per_transformation(passive: dict[str, Any], active: dict[str, Any]) -> dict[str, dict[str, float]]:
    p = next(r for r in passive["results"] if r["backend"] == "faiss")["per_transformation"]
    a = next(r for r in active["results"] if r["backend"] == "faiss")["per_transformation"]
    return {name: {"passive": round(p[name]["r@1"], 4), "active": round(a[name]["r@1"], 4)} for name in p}


def run_dataset(db: Any, folder: Path, args: argparse.Namespace,
                done: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Both ranking modes on one folder; `done` gets the figures so far after each mode (a long run
    interrupted in the second mode keeps the first)."""
    settings = ActivationSettings(psnr=args.psnr, iterations=args.iterations, lr=args.lr)
    out: dict[str, Any] = {}
    for rerank in [mode.strip() == "rerank" for mode in args.modes.split(",") if mode.strip()]:
        options = CopyDetectOptions(device="cpu", backends=(BackendSpec("exact"), BackendSpec("faiss", args.factory)),
                                    distractors=args.distractors, combinations=1, rerank=rerank, workers=1)
        started = time.perf_counter()
        report = run_copydetect_active(db, [folder], options, settings).to_json()
        seconds = time.perf_counter() - started
        summary = report["activation"][args.factory]
        key = "rerank" if rerank else "no_rerank"
        out[key] = {"faiss_passive": overall(report["passive"], "faiss"),
                    "faiss_active": overall(report["active"], "faiss"),
                    "exact_passive": overall(report["passive"], "exact"),
                    "exact_active": overall(report["active"], "exact"),
                    "per_transformation_r@1": per_transformation(report["passive"], report["active"]),
                    "seconds": round(seconds, 1)}
        out["activation"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()
                             if k != "folder"}
        out["references"] = report["passive"]["references"]
        out["queries"] = report["passive"]["queries"]
        out["distractors"] = report["passive"]["distractors"]
        print(key, json.dumps(out[key]["faiss_passive"]), "->", json.dumps(out[key]["faiss_active"]),
              f"psnr {summary['mean_psnr']:.2f}", flush=True)
        done(out)
    return out


SETTINGS = ("factory", "iterations", "lr", "psnr", "distractors")


def merged_with_previous(result: dict[str, Any]) -> dict[str, Any]:
    """Keep the other entries of earlier runs; an entry with the same settings gains the new ranking modes."""
    path = RESULTS / "activate.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    datasets: dict[str, Any] = {}
    for name, data in previous.get("datasets", {}).items():
        # Entries written before the settings were stored per entry carry the file's settings.
        datasets[name] = {**{key: previous.get(key) for key in SETTINGS}, **data}
    for name, data in result["datasets"].items():
        old = datasets.get(name, {})
        same = all(old.get(key) == data[key] for key in SETTINGS)
        datasets[name] = {**old, **data} if same else data
    # Findings are written by hand from these figures and activate_transfer.md; a rerun keeps them.
    findings = {"findings": previous["findings"]} if previous.get("findings") else {}
    return {**result, **findings, "datasets": datasets}


def write_markdown(result: dict[str, Any]) -> Path:
    lines = ["# Active indexing: passive vs activated references", "",
             ("Machine: x86_64, 2 cores, Python 3.11.7 (each section gives its date). **Other jobs shared this "
              "CPU** (several helpers ran tests and benchmarks at the same time), so the times are upper bounds."), "",
             ("Model efficientnet-lite0; the faiss index is trained on the passive references' vectors, and the "
              "activated references are added to a copy of that same trained index; queries: every "
              "transformation of `eval copydetect` (1 random combination) and the distractors given below, the "
              "same for passive and active."), "",
             ("Why the activation helps or not: `activate_transfer.md` measures how far the edited copies of an "
              "activated image follow its feature toward the target."), ""]
    if result.get("findings"):
        lines += ["## Findings", "", *[f"- {line}" for line in result["findings"]], ""]
    # Distinct real photos first, the earlier near-duplicate crop run last.
    order = {"distinct": 0, "generated": 1, "photos": 2}
    entries = sorted(result["datasets"].items(), key=lambda item: order.get(item[0].split()[0], 1))
    for name, data in entries:
        act = data["activation"]
        lines += [(f"## {data.get('title', name)}: {data['references']} references, {data['queries']} queries, "
                   f"`{data['factory']}`"), "",
                  (f"{data.get('date', result['date'])}; activation: {data['iterations']} Adam steps, lr "
                   f"{data['lr']}, PSNR >= {data['psnr']} dB; {data['distractors']} distractors."), "",
                  f"{data['note']}", "",
                  (f"Activated images: mean PSNR {act['mean_psnr']:.2f} dB (min {act['min_psnr']:.2f}), mean SSIM "
                   f"{act['mean_ssim']:.4f}, {act['unchanged']} of {act['images']} left unchanged (no step lowered "
                   "their loss); squared distance of the feature to its quantized target "
                   f"{act['mean_distance_to_target_before']:.4f} -> {act['mean_distance_to_target_after']:.4f}; "
                   f"{act['seconds_per_image']:.2f} s per image on this CPU (batch 8)."), "",
                  ("| ranking | backend | r@1 passive | r@1 active | r@10 passive | r@10 active | µAP passive | "
                   "µAP active |"), "|---|---|---|---|---|---|---|---|"]
        for key, label in (("no_rerank", "quantized distances (no rerank)"), ("rerank", "exact rerank")):
            if key not in data:
                continue
            for backend in ("faiss", "exact"):
                p, a = data[key][f"{backend}_passive"], data[key][f"{backend}_active"]
                if backend == "exact" and key == "rerank" and "no_rerank" in data:
                    continue  # exact search has no codes: one row is enough
                name_b = f"faiss {data['factory']}" if backend == "faiss" else "exact (no index)"
                lines.append(f"| {label if backend == 'faiss' else '-'} | {name_b} | {p['r@1']:.3f} | {a['r@1']:.3f} | {p['r@10']:.3f} | "
                             f"{a['r@10']:.3f} | {p['uap']:.3f} | {a['uap']:.3f} |")
        if "no_rerank" in data:
            lines += ["", f"r@1 per transformation, faiss {data['factory']} without rerank (passive -> active):", "",
                      "| transformation | passive | active |", "|---|---|---|"]
            lines += [f"| {t} | {v['passive']:.3f} | {v['active']:.3f} |"
                      for t, v in data["no_rerank"]["per_transformation_r@1"].items()]
        lines.append("")
    path = RESULTS / "activate.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="photos,generated")
    parser.add_argument("--references", type=int, default=160)
    parser.add_argument("--factory", default="IVF4,PQ16x4")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--psnr", type=float, default=43.0)
    parser.add_argument("--distractors", type=int, default=20)
    parser.add_argument("--photos", default=None, help="folder with scikit-image's sample photos")
    parser.add_argument("--modes", default="no_rerank,rerank", help="no_rerank and/or rerank")
    parser.add_argument("--photo-folder", default=None, help="a folder of distinct photos (the `distinct` data set)")
    parser.add_argument("--photo-source", default="", help="where the --photo-folder photos came from")
    parser.add_argument("--short-side", type=int, default=256, help="`distinct`: resize the short side to this")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite activate.md from activate.json")
    args = parser.parse_args()
    if args.markdown_only:
        print(f"wrote {write_markdown(json.loads((RESULTS / 'activate.json').read_text()))}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="bench-activate-"))
    home = root / "home"
    url = os.environ.get("SISYPHUS_DATABASE_URL")
    db = open_database(Settings(home=home, database_url=url or None), require_schema=False)
    if migrate.current_revision(db) is None:
        migrate.upgrade(db)
    result: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                              f"Python {platform.python_version()}",
                              "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                              "factory": args.factory, "iterations": args.iterations, "lr": args.lr,
                              "psnr": args.psnr, "distractors": args.distractors, "datasets": {}}
    try:
        for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            folder = root / name
            if name == "photos":
                source = photo_folder(args.photos)
                if source is None:
                    print("skimage is not installed and no --photos folder was given: skipping photos")
                    continue
                used = make_photo_crops(source, folder, args.references)
                note = (f"{args.references} random crops (40-90 % of each side, resized to 256x192) of "
                        f"{len(used)} scikit-image sample photos ({', '.join(used)}): crops of one photo are "
                        "near-duplicates of each other.")
                title = "near-duplicate crops of 14 scikit-image photos"
            elif name == "distinct":
                if not args.photo_folder:
                    raise SystemExit("the distinct data set needs --photo-folder DIR (and --photo-source TEXT)")
                used_paths = make_distinct_photos(Path(args.photo_folder), folder, args.references, args.short_side)
                note = (f"{args.references} distinct photos, the first {args.references} (sorted by path) of "
                        f"{args.photo_folder} ({used_paths[0].name} ... {used_paths[-1].name}), short side resized "
                        f"to {args.short_side} px (bicubic), saved as PNG. Source: {args.photo_source or 'not given'}.")
                title = "distinct real photos"
            else:
                make_generated(folder, args.references)
                note = f"{args.references} generated pictures (`write_test_image`, smooth random blobs, 256x192)."
                title = "generated pictures"
            print(f"== {name}", flush=True)
            extra = {"note": note, "title": title, **{key: getattr(args, key) for key in SETTINGS}}

            def save(figures: dict[str, Any], key: str = f"{name} {args.factory}", extra: dict[str, Any] = extra) -> None:
                nonlocal result
                stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
                result["datasets"][key] = {**figures, **extra, "date": stamp}
                RESULTS.mkdir(parents=True, exist_ok=True)
                result = merged_with_previous(result)
                (RESULTS / "activate.json").write_text(json.dumps(result, indent=2) + "\n")
                print(f"wrote {write_markdown(result)}", flush=True)

            run_dataset(db, folder, args, save)
    finally:
        db.dispose()
        if not url:
            from sisyphus_db.db.embedded import EmbeddedServer

            EmbeddedServer(home).stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
