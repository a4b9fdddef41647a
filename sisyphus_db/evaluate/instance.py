"""`sisyphus eval instance`: find a pasted object among scenes, per method and per scale.

Each object image is pasted (with its alpha) into `per_object` scenes per scale at random
places; the untouched scenes are distractors. Everything is ingested into a throw-away
database, the object images are the queries, and every method ranks all frames:
- map:  mean average precision, the object's pasted frames of that scale being relevant
        (its frames at other scales are left out of the ranking, neither right nor wrong);
- r@10: the share of relevant frames in the first 10;
- iou:  mean intersection-over-union of the returned box with the pasted box, over the
        relevant frames in the first 10 (methods that return boxes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from PIL import Image

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.instance_data import image_files, load_rgba, paste

logger = logging.getLogger(__name__)

INSTANCE_METHODS = ("global", "regions", "bow", "bow+spatial+expansion")
DEFAULT_SCALES = (0.1, 0.2, 0.3)
Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class InstanceOptions:
    per_object: int = 3
    scales: tuple[float, ...] = DEFAULT_SCALES
    methods: tuple[str, ...] = ("global", "regions")
    model: str = "efficientnet-lite0"
    device: str = "auto"
    seed: int = 0
    expand: int = 2

    def check(self) -> None:
        if self.per_object < 1:
            raise InputError(f"--per-object must be at least 1, got {self.per_object}")
        if not self.scales or any(not 0.0 < s <= 1.0 for s in self.scales):
            raise InputError(f"--scales must be fractions of the scene width in (0, 1], got {self.scales}")
        unknown = [m for m in self.methods if m not in INSTANCE_METHODS]
        if unknown:
            raise InputError(f"unknown method {unknown[0]!r}: expected some of {', '.join(INSTANCE_METHODS)}")


@dataclass(frozen=True)
class Truth:
    path: str
    object_index: int
    scale: float
    box: tuple[int, int, int, int]


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--scales must be comma-separated fractions, e.g. 0.1,0.2,0.3, got {text!r}") from None


def make_ground_truth(objects: Sequence[Path], scenes: Sequence[Path], options: InstanceOptions,
                      directory: Path) -> list[Truth]:
    """Write the pasted frames and copies of the untouched scenes; the truth of the pasted ones."""
    from sisyphus_db.media.images import load_image

    rng = np.random.default_rng(options.seed)
    directory.mkdir(parents=True, exist_ok=True)
    scene_images = [load_image(path).rgb for path in scenes]
    for i, rgb in enumerate(scene_images):
        Image.fromarray(rgb).save(directory / f"distractor_{i:04d}.jpg", quality=92)
    truth: list[Truth] = []
    for o, path in enumerate(objects):
        obj = load_rgba(path)
        for scale in options.scales:
            for n in range(options.per_object):
                scene = scene_images[int(rng.integers(0, len(scene_images)))]
                pasted = paste(scene, obj, scale, rng)
                out = directory / f"object{o:03d}_s{scale:g}_{n:02d}.jpg"
                Image.fromarray(pasted.image).save(out, quality=92)
                truth.append(Truth(str(out.resolve()), o, scale, pasted.box))
    return truth


def average_precision(ranked: Sequence[int], relevant: set[int]) -> float:
    if not relevant:
        return float("nan")
    hits, total = 0, 0.0
    for rank, frame_id in enumerate(ranked, start=1):
        if frame_id in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class InstanceReport:
    options: InstanceOptions
    frames: int = 0
    queries: int = 0
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    run_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "frames": self.frames, "queries": self.queries,
                "per_object": self.options.per_object, "scales": list(self.options.scales),
                "model": self.options.model, "methods": self.methods,
                "seconds": {key: round(value, 3) for key, value in self.seconds.items()}}


@contextlib.contextmanager
def throwaway_database(settings: Settings) -> Iterator[Database]:
    """A new database on the same server, migrated, dropped again at the end."""
    import psycopg

    from sisyphus_db.db import migrate
    from sisyphus_db.db.database import open_database, resolve_url

    base = resolve_url(settings)
    name = f"sisyphus_eval_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(base)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db = None
    try:
        db = open_database(dataclasses.replace(settings, database_url=url), require_schema=False)
        migrate.upgrade(db)
        yield db
    finally:
        if db is not None:
            db.dispose()
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_instance_eval(db: Database, objects: Sequence[Path], truth: Sequence[Truth], options: InstanceOptions,
                      workdir: Path, progress: Progress | None = None) -> InstanceReport:
    """Ingest the frames in `workdir`, build what the methods need, query with every object."""
    from sisyphus_db.ingest.pipeline import IngestOptions, run_ingest
    from sisyphus_db.local.search import LocalRequest, local_search
    from sisyphus_db.search.engine import SearchRequest
    from sisyphus_db.search.indexing import build_faiss_index, resolve_model

    report = InstanceReport(options)
    clock = time.perf_counter()
    summary = run_ingest(db, [workdir], IngestOptions(model=options.model, device=options.device, workers=1))
    report.seconds["ingest"] = time.perf_counter() - clock
    model = resolve_model(db, None)
    report.frames = summary.frames
    clock = time.perf_counter()
    build_faiss_index(db, model)
    report.seconds["index"] = time.perf_counter() - clock
    if "regions" in options.methods:
        from sisyphus_db.local.regions import build_regions

        clock = time.perf_counter()
        build_regions(db, model, device=options.device, progress=progress)
        build_faiss_index(db, model, kind="regions")
        report.seconds["regions"] = time.perf_counter() - clock
    if any(m.startswith("bow") for m in options.methods):
        from sisyphus_db.local.bow.build import build_bow

        clock = time.perf_counter()
        build_bow(db, model, device=options.device)
        report.seconds["bow"] = time.perf_counter() - clock
    with db.transaction() as conn:
        import sqlalchemy as sa

        ids = dict(conn.execute(sa.text("SELECT path, id FROM frames")).all())
    frame_truth = {ids[t.path]: t for t in truth if t.path in ids}
    report.queries = len(objects)
    k = min(10_000, max(1, len(ids)))
    clock = time.perf_counter()
    for method in options.methods:
        local = {"global": LocalRequest(method="global"), "regions": LocalRequest(method="regions"),
                 "bow": LocalRequest(method="bow", spatial=False),
                 "bow+spatial+expansion": LocalRequest(method="bow", expand=options.expand)}[method]
        per_scale: dict[float, list[tuple[float, float]]] = {s: [] for s in options.scales}
        ious: dict[float, list[float]] = {s: [] for s in options.scales}
        for o, path in enumerate(objects):
            outcome = local_search(db, model, path, SearchRequest(k=k, save=False), local, device=options.device)
            ranked_all = [hit.frame_id for hit in outcome.hits]
            boxes = {hit.frame_id: hit.box for hit in outcome.hits}
            for scale in options.scales:
                relevant = {f for f, t in frame_truth.items() if t.object_index == o and t.scale == scale}
                junk = {f for f, t in frame_truth.items() if t.object_index == o and t.scale != scale}
                ranked = [f for f in ranked_all if f not in junk]
                top = ranked[:10]
                per_scale[scale].append((average_precision(ranked, relevant),
                                         len(relevant & set(top)) / len(relevant)))
                for f in top:
                    if f in relevant and boxes.get(f) is not None:
                        ious[scale].append(box_iou(boxes[f], frame_truth[f].box))  # type: ignore[arg-type]
            if progress is not None:
                progress(f"queries: {method}", 1, len(objects))
        figures: dict[str, Any] = {"per_scale": {}}
        all_pairs = [pair for pairs in per_scale.values() for pair in pairs]
        all_ious = [v for values in ious.values() for v in values]
        figures["map"] = float(np.mean([p[0] for p in all_pairs]))
        figures["r@10"] = float(np.mean([p[1] for p in all_pairs]))
        figures["iou"] = float(np.mean(all_ious)) if all_ious else None
        for scale, pairs in per_scale.items():
            figures["per_scale"][f"{scale:g}"] = {
                "map": float(np.mean([p[0] for p in pairs])), "r@10": float(np.mean([p[1] for p in pairs])),
                "iou": float(np.mean(ious[scale])) if ious[scale] else None}
        report.methods[method] = figures
    report.seconds["queries"] = time.perf_counter() - clock
    return report


def metric_rows(report: InstanceReport) -> list[Any]:
    from sisyphus_db.evaluate.records import MetricRow

    rows = []
    for method, figures in report.methods.items():
        for metric in ("map", "r@10", "iou"):
            if figures[metric] is not None:
                rows.append(MetricRow(method, None, "all", metric, figures[metric]))
        for scale, values in figures["per_scale"].items():
            for metric in ("map", "r@10", "iou"):
                if values[metric] is not None:
                    rows.append(MetricRow(method, None, f"scale={scale}", metric, values[metric]))
    return rows


def instance_eval(settings: Settings, objects_dir: Path, scenes_dir: Path, options: InstanceOptions, workdir: Path,
                  progress: Progress | None = None, record_in: Database | None = None) -> InstanceReport:
    """The whole protocol on a throw-away database; the figures are stored in `record_in` if given."""
    from sisyphus_db.evaluate.records import save_eval_run

    options.check()
    objects = image_files(objects_dir, "objects")
    scenes = image_files(scenes_dir, "scenes")
    truth = make_ground_truth(objects, scenes, options, workdir)
    with throwaway_database(settings) as db:
        report = run_instance_eval(db, objects, truth, options, workdir, progress)
    if record_in is not None:
        params = {**dataclasses.asdict(options), "objects": str(objects_dir), "scenes": str(scenes_dir),
                  "frames": report.frames}
        report.run_id = save_eval_run(record_in, "instance", params, metric_rows(report))
    return report
