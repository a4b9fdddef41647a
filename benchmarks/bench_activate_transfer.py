"""Does an activation reach the edited copies? The mechanism behind `bench_activate.py`'s figures.

    python benchmarks/bench_activate_transfer.py --photos DIR [--references 250] [--activated 48]
        [--factory IVF4,PQ16x4] [--iterations 10] [--lr 0.005] [--psnr 43] [--source TEXT]

The first --references photos of DIR (sorted; already at the size wanted) are embedded and
a faiss index with --factory is trained on their features and filled with them, as
`eval copydetect --activate` does. The first --activated of them are activated toward
their quantized representation in that index (`sisyphus activate`'s code). Then, for
every transformation of `eval copydetect` (the same seeds), it measures:

- the mean squared distance of the query's feature to the reference's quantized target
  q(f(x)), for queries made from the original (passive) and from the activated image;
- r@1 of those queries among the codes of all references (quantized distances, no
  rerank): passive codes; active = the activated references re-encoded by the same
  trained index (what ingesting the activated images gives);
- r@1 of exact search (passive features; active = the activated references' features).

Active indexing helps when the queries' features follow the reference's feature toward
its target; when the change does not survive the edit, the stored feature (and its code)
moves and the copies stay where they were. Writes benchmarks/results/activate_transfer.md
(+ .json). Other jobs shared the CPU.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sisyphus_db.activate.optimise import ActivationSettings
from sisyphus_db.activate.runner import Planned, activate_plan
from sisyphus_db.activate.target import quantized_targets
from sisyphus_db.ann.build import build_index
from sisyphus_db.embed.embedder import load_embedder
from sisyphus_db.evaluate.augment import AUGMENTATIONS, apply
from sisyphus_db.media.images import load_image

RESULTS = Path(__file__).resolve().parent / "results"


def codes_rank_is_first(queries: np.ndarray, reconstructions: np.ndarray, rows: list[int]) -> float:
    """Share of queries whose own reference's reconstruction is the nearest (ties count against)."""
    hits = []
    for query, row in zip(queries, rows, strict=True):
        distances = ((reconstructions - query) ** 2).sum(axis=1)
        hits.append(int((distances <= distances[row]).sum()) == 1)
    return float(np.mean(hits))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True)
    parser.add_argument("--source", default="")
    parser.add_argument("--references", type=int, default=250)
    parser.add_argument("--activated", type=int, default=48)
    parser.add_argument("--factory", default="IVF4,PQ16x4")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--psnr", type=float, default=43.0)
    args = parser.parse_args()
    paths = sorted(p for p in Path(args.photos).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    paths = paths[:args.references]
    if len(paths) < args.references or args.activated > args.references:
        raise SystemExit(f"{args.photos} holds {len(paths)} photos: fewer than --references/--activated ask")
    embedder = load_embedder("efficientnet-lite0", device="cpu")
    features = np.concatenate([embedder.embed_images([load_image(p).rgb for p in paths[i:i + 16]])
                               for i in range(0, len(paths), 16)]).astype(np.float32)
    index = build_index(features, np.arange(len(paths), dtype=np.int64), factory=args.factory, device="cpu")
    passive_codes = quantized_targets(index, features).vectors
    rows = list(range(args.activated))
    out = Path(tempfile.mkdtemp(prefix="bench-activate-transfer-"))
    try:
        plan = [Planned(paths[row], out / f"{row:05d}_{paths[row].name}") for row in rows]
        started = time.perf_counter()
        report = activate_plan(plan, embedder, index, {"kind": "trained_for_purpose", "factory": args.factory},
                               ActivationSettings(psnr=args.psnr, iterations=args.iterations, lr=args.lr))
        seconds = (time.perf_counter() - started) / len(rows)
        if report.errors:
            raise SystemExit(f"activation failed: {report.errors[0]}")
        activated = embedder.embed_images([load_image(item.output).rgb for item in plan]).astype(np.float32)
        active_codes = passive_codes.copy()
        active_codes[rows] = quantized_targets(index, activated).vectors
        active_features = features.copy()
        active_features[rows] = activated
        target = passive_codes[rows]
        same_code = float(np.mean(np.all(np.isclose(active_codes[rows], target), axis=1)))
        per: dict[str, dict[str, float]] = {}
        for name in AUGMENTATIONS:
            seeds = rows  # eval copydetect seeds each reference's transformations with its number
            q_passive = embedder.embed_images([np.asarray(apply(name, Image.open(paths[r]).convert("RGB"), seed=s))
                                               for r, s in zip(rows, seeds, strict=True)])
            q_active = embedder.embed_images([np.asarray(apply(name, Image.open(item.output).convert("RGB"), seed=s))
                                              for item, s in zip(plan, seeds, strict=True)])
            per[name] = {
                "query_to_target_passive": float(np.mean(((q_passive - target) ** 2).sum(axis=1))),
                "query_to_target_active": float(np.mean(((q_active - target) ** 2).sum(axis=1))),
                "codes_r@1_passive": codes_rank_is_first(q_passive, passive_codes, rows),
                "codes_r@1_active": codes_rank_is_first(q_active, active_codes, rows),
                "exact_r@1_passive": codes_rank_is_first(q_passive, features, rows),
                "exact_r@1_active": codes_rank_is_first(q_active, active_features, rows),
            }
            print(name, json.dumps({k: round(v, 3) for k, v in per[name].items()}), flush=True)
        manifests = report.items
        result: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "photos": args.photos, "source": args.source,
            "references": len(paths), "activated": len(rows), "factory": args.factory,
            "iterations": args.iterations, "lr": args.lr, "psnr": args.psnr,
            "mean_psnr": float(np.mean([m["psnr"] for m in manifests if m["psnr"] is not None])),
            "reference_to_target_before": float(np.mean(((features[rows] - target) ** 2).sum(axis=1))),
            "reference_to_target_after": float(np.mean(((activated - target) ** 2).sum(axis=1))),
            "reference_moved": float(np.mean(((activated - features[rows]) ** 2).sum(axis=1))),
            "code_unchanged": same_code, "seconds_per_image": seconds, "per_transformation": per,
            "mean": {key: float(np.mean([v[key] for v in per.values()])) for key in next(iter(per.values()))},
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "activate_transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)
    return 0


def write_markdown(r: dict[str, Any]) -> None:
    lines = [
        "# Active indexing: does the activation reach the edited copies?", "",
        (f"Machine: {r['machine']}; {r['date']}. **Other jobs shared this CPU.** Written by "
         "`benchmarks/bench_activate_transfer.py`."), "",
        (f"{r['references']} references (the first of {r['photos']}; source: {r['source'] or 'not given'}), "
         f"`{r['factory']}` trained on their efficientnet-lite0 features and filled with them; the first "
         f"{r['activated']} activated toward their quantized target q(f(x)) ({r['iterations']} Adam steps, lr "
         f"{r['lr']}, PSNR >= {r['psnr']} dB: mean {r['mean_psnr']:.2f} dB, {r['seconds_per_image']:.2f} s per "
         "image). Queries: each transformation of `eval copydetect` (same seeds) of the original and of the "
         f"activated image; r@1 is over all {r['references']} references, no distractors."), "",
        (f"Reference feature: squared distance to its target {r['reference_to_target_before']:.3f} -> "
         f"{r['reference_to_target_after']:.3f}; it moved by {r['reference_moved']:.3f} (squared, unit features); "
         f"{100 * r['code_unchanged']:.0f} % of the activated references keep the original's code when "
         "re-encoded by the same index."), "",
        ("| transformation | query->target passive | query->target active | codes r@1 passive | codes r@1 active "
         "| exact r@1 passive | exact r@1 active |"),
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in [*r["per_transformation"].items(), ("**mean**", r["mean"])]:
        lines.append(f"| {name} | {v['query_to_target_passive']:.3f} | {v['query_to_target_active']:.3f} | "
                     f"{v['codes_r@1_passive']:.3f} | {v['codes_r@1_active']:.3f} | {v['exact_r@1_passive']:.3f} | "
                     f"{v['exact_r@1_active']:.3f} |")
    (RESULTS / "activate_transfer.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
