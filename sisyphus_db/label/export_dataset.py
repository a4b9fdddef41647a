"""`sisyphus export NAME --format imagefolder|csv|parquet|coco --out DIR`: a label as a training set.

Layouts (every format also writes DIR/manifest.json: what was exported, how, and the split):
- imagefolder: DIR/{train,val}/{NAME,not-NAME}/<frame_id><ext> (torchvision ImageFolder)
- csv / parquet: DIR/frames.csv / DIR/frames.parquet, one row per frame (paths point at the stored files)
- coco: DIR/images/<frame_id><ext>, DIR/train.json and DIR/val.json with images, one image-level
  annotation per image (no bbox) and the categories NAME (and not-NAME with negatives)
Image files are hard-linked when the output is on the same file system, copied otherwise;
naming them by frame id keeps two frames with the same file name apart.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.label.export_select import ExportError, ExportFrame, negative_class, select_frames, split_by_source

FORMATS: tuple[str, ...] = ("imagefolder", "csv", "parquet", "coco")
SPLITS: tuple[str, ...] = ("train", "val")
COLUMNS: tuple[str, ...] = ("path", "frame_id", "source_id", "source_uri", "pts_seconds", "split", "label",
                            "positive", "origin", "score", "run_id", "created_by")
# What each format writes under DIR: with --force exactly these are replaced, nothing else.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "imagefolder": ("train", "val", "manifest.json"),
    "csv": ("frames.csv", "manifest.json"),
    "parquet": ("frames.parquet", "manifest.json"),
    "coco": ("images", "train.json", "val.json", "manifest.json"),
}


@dataclass(frozen=True)
class ExportReport:
    label: str
    format: str
    out: str
    frames: int
    positives: int
    negatives: int
    train: int
    val: int
    train_sources: int
    val_sources: int
    linked: int
    copied: int
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def prepare_output(out: Path, fmt: str, force: bool) -> None:
    """Refuse an existing non-empty folder without --force; with it, remove only what this format writes."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError(f"output folder {out} exists and is not empty: choose another --out or add --force")
        for name in OUTPUTS[fmt]:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _check_files(frames: list[ExportFrame]) -> None:
    missing = [frame.path for frame in frames if not os.path.isfile(frame.path)]
    if missing:
        raise ExportError(f"{len(missing)} frame file{'s are' if len(missing) > 1 else ' is'} missing "
                          f"(e.g. {missing[0]}): nothing was exported")


def _place(source: str, target: Path) -> bool:
    """Hard-link the file (same file system), else copy it; True when linked."""
    try:
        os.link(source, target)
        return True
    except OSError:
        shutil.copy2(source, target)
        return False


def _file_name(frame: ExportFrame) -> str:
    return f"{frame.frame_id}{Path(frame.path).suffix.lower() or '.jpg'}"


def _row(frame: ExportFrame, label: str) -> dict[str, Any]:
    return {"path": frame.path, "frame_id": frame.frame_id, "source_id": frame.source_id,
            "source_uri": frame.source_uri, "pts_seconds": frame.pts_seconds, "split": frame.split,
            "label": frame.class_name(label), "positive": frame.positive, "origin": frame.origin,
            "score": frame.score, "run_id": frame.run_id, "created_by": frame.created_by}


def _write_imagefolder(out: Path, frames: list[ExportFrame], label: str) -> Counter[str]:
    placed: Counter[str] = Counter()
    for frame in frames:
        folder = out / frame.split / frame.class_name(label)
        folder.mkdir(parents=True, exist_ok=True)
        placed["linked" if _place(frame.path, folder / _file_name(frame)) else "copied"] += 1
    return placed


def _write_csv(out: Path, frames: list[ExportFrame], label: str) -> None:
    with (out / "frames.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for frame in frames:
            writer.writerow({key: ("" if value is None else value) for key, value in _row(frame, label).items()})


def _write_parquet(out: Path, frames: list[ExportFrame], label: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("path", pa.string()), ("frame_id", pa.int64()), ("source_id", pa.int64()),
                        ("source_uri", pa.string()), ("pts_seconds", pa.float64()), ("split", pa.string()),
                        ("label", pa.string()), ("positive", pa.bool_()), ("origin", pa.string()),
                        ("score", pa.float32()), ("run_id", pa.int64()), ("created_by", pa.string())])
    rows = [_row(frame, label) for frame in frames]
    table = pa.table({name: [row[name] for row in rows] for name in COLUMNS}, schema=schema)
    pq.write_table(table, out / "frames.parquet")


def _write_coco(out: Path, frames: list[ExportFrame], label: str, with_negatives: bool) -> Counter[str]:
    placed: Counter[str] = Counter()
    (out / "images").mkdir(exist_ok=True)
    categories = [{"id": 1, "name": label, "supercategory": "label"}]
    if with_negatives:
        categories.append({"id": 2, "name": negative_class(label), "supercategory": "label"})
    created = datetime.now(timezone.utc).isoformat()
    for split in SPLITS:
        images, annotations = [], []
        for frame in (f for f in frames if f.split == split):
            name = _file_name(frame)
            if not (out / "images" / name).exists():
                placed["linked" if _place(frame.path, out / "images" / name) else "copied"] += 1
            images.append({"id": frame.frame_id, "file_name": f"images/{name}", "width": frame.width,
                           "height": frame.height, "source_id": frame.source_id, "source_uri": frame.source_uri,
                           "pts_seconds": frame.pts_seconds})
            annotations.append({"id": len(annotations) + 1, "image_id": frame.frame_id,
                                "category_id": 1 if frame.positive else 2, "origin": frame.origin,
                                "score": frame.score})
        document = {"info": {"description": f"sisyphus-db export of label {label!r} ({split})",
                             "date_created": created},
                    "images": images, "annotations": annotations, "categories": categories}
        (out / f"{split}.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    return placed


def export_dataset(db: Database, label: str, fmt: str, out: Path, *, val_fraction: float = 0.2,
                   min_score: float | None = None, include_negatives: bool = False, seed: int = 0,
                   force: bool = False, model_name: str | None = None) -> ExportReport:
    """Write the label's training set in `fmt` under `out`; everything is checked before a file is written."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if label.strip() in {".", ".."}:
        raise ExportError(f"label {label!r} cannot be a folder name")
    frames = split_by_source(select_frames(db, label, include_negatives=include_negatives, min_score=min_score,
                                           model_name=model_name), val_fraction, seed)
    label = label.strip()
    warnings: list[str] = []
    if fmt in ("imagefolder", "coco"):
        _check_files(frames)
    if val_fraction > 0 and not any(frame.split == "val" for frame in frames):
        warnings.append("all frames come from one source, so the validation split is empty")
    prepare_output(out, fmt, force)
    placed: Counter[str] = Counter()
    if fmt == "imagefolder":
        placed = _write_imagefolder(out, frames, label)
    elif fmt == "csv":
        _write_csv(out, frames, label)
    elif fmt == "parquet":
        _write_parquet(out, frames, label)
    else:
        placed = _write_coco(out, frames, label, include_negatives)
    by_split = {split: [f for f in frames if f.split == split] for split in SPLITS}
    sources = {split: sorted({f.source_id for f in chosen}) for split, chosen in by_split.items()}
    manifest = {
        "label": label, "format": fmt, "created_at": datetime.now(timezone.utc).isoformat(),
        "val_fraction": val_fraction, "seed": seed, "min_score": min_score, "include_negatives": include_negatives,
        "frames": len(frames),
        "classes": {split: dict(Counter(f.class_name(label) for f in chosen)) for split, chosen in by_split.items()},
        "sources": sources,
        "origins": dict(Counter(f.origin for f in frames)),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return ExportReport(
        label=label, format=fmt, out=str(out), frames=len(frames),
        positives=sum(1 for f in frames if f.positive), negatives=sum(1 for f in frames if not f.positive),
        train=len(by_split["train"]), val=len(by_split["val"]),
        train_sources=len(sources["train"]), val_sources=len(sources["val"]),
        linked=placed["linked"], copied=placed["copied"], files=sorted(OUTPUTS[fmt]), warnings=warnings)
