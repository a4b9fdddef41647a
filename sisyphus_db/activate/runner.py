"""Activating a set of images: plan the outputs, batch, resume, record failures, write manifests.

Every input image gets `DIR/<relative path>` (the path inside the folder given, or the
file name for a file given directly) and its manifest next to it. An image whose output
and manifest both exist is skipped, so an interrupted run is simply run again. An image
that cannot be read (or has an unsupported mode) is recorded and the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sisyphus_db.media.activation_manifest import (
    MANIFEST_VERSION,
    manifest_path,
    write_manifest,
)
from sisyphus_db.activate.optimise import ActivationSettings
from sisyphus_db.embed.embedder import Embedder
from sisyphus_db.errors import AnnIndexError, InputError, SisyphusError
from sisyphus_db.media.discover import discover

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]  # (stage, advance, total), as elsewhere
REGISTERED = "registered"
DEFAULT_BATCH_SIZE = 8
_SHRINK_TRIES = 8  # rescalings of the change until the encoded file meets the PSNR bound


@dataclass(frozen=True)
class Planned:
    source: Path
    output: Path


@dataclass(frozen=True)
class ActivateOptions:
    model: str = "efficientnet-lite0"
    index: str = REGISTERED  # or a faiss factory trained on the inputs' features
    settings: ActivationSettings = field(default_factory=ActivationSettings)
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "auto"


@dataclass
class ActivateReport:
    out: Path
    model: str
    index: dict[str, Any]
    device: str
    items: list[dict[str, Any]] = field(default_factory=list)  # one manifest per activated image
    skipped: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        psnrs = [item["psnr"] for item in self.items if item["psnr"] is not None]
        return {"out": str(self.out), "model": self.model, "index": self.index, "device": self.device,
                "activated": len(self.items), "skipped": len(self.skipped), "errors": self.errors,
                "mean_psnr": round(float(np.mean(psnrs)), 3) if psnrs else None,
                "seconds": round(self.seconds, 3), "items": self.items}


def plan_outputs(paths: Sequence[Path | str], out: Path | str) -> list[Planned]:
    """Where each input image goes under out; refuses an out folder inside an input folder."""
    out_dir = Path(out).expanduser().resolve()
    for given in paths:
        root = Path(given).expanduser().resolve()
        if root.is_dir() and (out_dir == root or root in out_dir.parents):
            raise InputError(f"--out {out_dir} is inside the input folder {root}: the activated images would be "
                             "read as inputs on the next run; choose a folder outside it")
    found = discover(paths)
    if found.errors:
        raise InputError(found.errors[0].message)
    plan: list[Planned] = []
    seen: dict[Path, Path] = {}
    for group in found.image_groups:
        root = group.root.resolve()
        for image in group.images:
            source = image.resolve()
            relative = source.relative_to(root) if group.kind == "folder" else Path(source.name)
            output = out_dir / relative
            if output == source:
                raise InputError(f"{source}: the output would overwrite the original: choose another --out")
            if output in seen and seen[output] != source:
                raise InputError(f"{seen[output]} and {source} would both be written to {output}: activate them "
                                 "into different --out folders")
            seen[output] = source
            plan.append(Planned(source, output))
    if not plan:
        raise InputError("no images found in the given paths (videos are not activated)")
    return plan


def is_done(item: Planned) -> bool:
    return item.output.is_file() and manifest_path(item.output).is_file()


def train_index_for_inputs(embedder: Embedder, plan: Sequence[Planned], factory: str,
                           progress: Progress | None = None) -> tuple[Any, dict[str, Any]]:
    """A faiss index with `factory` trained (and filled) on the features of the input images themselves."""
    from sisyphus_db.ann.build import build_index
    from sisyphus_db.media.images import load_image

    features: list[np.ndarray] = []
    for item in plan:
        try:
            rgb = load_image(item.source).rgb
        except SisyphusError:
            continue  # reported by the activation pass
        features.append(embedder.embed_images([rgb])[0])
        if progress is not None:
            progress("embed inputs for the index", 1, len(plan))
    if not features:
        raise InputError("none of the input images could be read: nothing to train an index on")
    vectors = np.stack(features).astype(np.float32)
    try:
        index = build_index(vectors, np.arange(len(vectors), dtype=np.int64), factory=factory)
    except AnnIndexError as exc:
        raise AnnIndexError(f"--index {factory} is trained on the {len(vectors)} input images: {exc}") from None
    return index, {"kind": "trained_for_purpose", "factory": factory, "trained_on": len(vectors),
                   "note": "trained on the features of the input images themselves, not the registered sidecar"}


def activate_plan(plan: Sequence[Planned], embedder: Embedder, index: Any, index_info: dict[str, Any],
                  settings: ActivationSettings, *, batch_size: int = DEFAULT_BATCH_SIZE,
                  progress: Progress | None = None, out: Path | None = None) -> ActivateReport:
    """Activate every planned image not already done, batch_size at a time."""
    from sisyphus_db.activate.optimise import FeatureFunction

    settings.check()
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    features = FeatureFunction(embedder)
    features.check_gradients()
    report = ActivateReport(out or (plan[0].output.parent if plan else Path(".")), embedder.spec.name, index_info,
                            embedder.device)
    todo = []
    for item in plan:
        (report.skipped.append(str(item.source)) if is_done(item) else todo.append(item))
    if progress is not None:
        progress("activate", len(report.skipped), len(plan))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        report.items.extend(_activate_batch(chunk, features, index, index_info, settings, report.errors))
        if progress is not None:
            progress("activate", len(chunk), None)
    report.seconds = time.perf_counter() - started
    return report


def _activate_batch(chunk: Sequence[Planned], features: Any, index: Any, index_info: dict[str, Any],
                    settings: ActivationSettings, errors: list[dict[str, str]]) -> list[dict[str, Any]]:
    import torch

    from sisyphus_db.activate.imageio import model_view, read_source
    from sisyphus_db.activate.optimise import optimise
    from sisyphus_db.activate.target import quantized_targets

    started = time.perf_counter()
    sources, items = [], []
    for item in chunk:
        try:
            sources.append(read_source(item.source))
            items.append(item)
        except SisyphusError as exc:
            logger.info("%s", exc)  # the caller reports the errors list
            errors.append({"path": str(item.source), "error": str(exc)})
    if not sources:
        return []
    embedder: Embedder = features.embedder
    before = embedder.embed_images([model_view(s.colour, s.alpha) for s in sources])
    targets = quantized_targets(index, before)
    device = features.device

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div(255.0)[None].to(device)

    colours = [tensor(s.colour) for s in sources]
    alphas = [None if s.alpha is None else tensor(s.alpha[..., None]) for s in sources]
    changes = optimise(features, colours, alphas, targets, settings)
    per_image = (time.perf_counter() - started) / len(sources)
    done = []
    for row, (item, source, change) in enumerate(zip(items, sources, changes, strict=True)):
        one_started = time.perf_counter()
        try:
            manifest = _finish(item, source, change[0].permute(1, 2, 0).cpu().numpy(), embedder,
                               targets.vectors[row], before[row], index_info, settings)
        except SisyphusError as exc:
            errors.append({"path": str(item.source), "error": str(exc)})
            continue
        manifest["seconds"] = round(per_image + time.perf_counter() - one_started, 3)
        write_manifest(item.output, manifest)
        done.append(manifest)
    return done


def _finish(item: Planned, source: Any, change: np.ndarray, embedder: Embedder, target: np.ndarray,
            before: np.ndarray, index_info: dict[str, Any], settings: ActivationSettings) -> dict[str, Any]:
    """Round, encode, and shrink the change until the file as written meets the PSNR bound; write it."""
    from sisyphus_db.activate.imageio import (
        decode,
        encode,
        model_view,
        with_colour,
    )
    from sisyphus_db.activate.quality import mse_for_psnr, psnr, ssim
    from sisyphus_db.media.images import write_atomic

    original = source.colour
    scale = 1.0
    for _ in range(_SHRINK_TRIES):
        colour = np.clip(np.rint(original.astype(np.float32) + scale * change * 255.0), 0, 255).astype(np.uint8)
        data = encode(source, with_colour(source, colour))
        written = decode(data, source.mode)
        channels = written[..., :original.shape[2]]
        measured = psnr(original, channels)
        if measured >= settings.psnr:
            break
        # Shrink by the ratio of the allowed to the measured error, a little more each try.
        measured_mse = float(np.mean((original.astype(np.float64) - channels) ** 2))
        scale *= 0.97 * (mse_for_psnr(settings.psnr) / measured_mse) ** 0.5
    else:
        raise InputError(f"{item.source}: cannot keep PSNR >= {settings.psnr:g} dB in {source.format} (the "
                         f"re-encoding alone costs too much, {measured:.1f} dB): ask for a lower --psnr")
    after = embedder.embed_images([model_view(channels, written[..., 3] if source.mode == "RGBA" else None)])[0]
    write_atomic(item.output, data)
    return {
        "version": MANIFEST_VERSION, "activated": True,
        "original": str(item.source), "original_sha256": source.sha256, "output": str(item.output),
        "model": embedder.spec.name, "index": index_info, "device": embedder.device,
        "format": source.format, "mode": source.mode, "width": source.size[0], "height": source.size[1],
        "exif_transposed": source.exif_transposed,
        # An image none of whose steps lowered the loss is written unchanged: PSNR is then infinite (null).
        "changed": bool(np.isfinite(measured)), "psnr_target": settings.psnr,
        "psnr": round(measured, 3) if np.isfinite(measured) else None, "ssim": round(ssim(original, channels), 5),
        "distance_to_target_before": round(float(np.sum((before - target) ** 2)), 6),
        "distance_to_target_after": round(float(np.sum((after - target) ** 2)), 6),
        "iterations": settings.iterations, "lr": settings.lr, "change_scale": round(scale, 4),
    }


def run_activation(paths: Sequence[Path | str], out: Path | str, options: ActivateOptions = ActivateOptions(), *,
                   index: Any = None, index_info: dict[str, Any] | None = None,
                   progress: Progress | None = None) -> ActivateReport:
    """Plan, load the model, get the target index (the given one, or one trained on the inputs), activate."""
    from sisyphus_db.embed.embedder import load_embedder

    options.settings.check()
    plan = plan_outputs(paths, out)
    embedder = load_embedder(options.model, device=options.device)
    if index is None:
        if options.index == REGISTERED:
            raise InputError("--index registered needs the database's faiss sidecar for the model")
        from sisyphus_db.activate.optimise import FeatureFunction

        FeatureFunction(embedder).check_gradients()  # before minutes of embedding and training
        if all(is_done(item) for item in plan):  # nothing left: no index to train
            return ActivateReport(Path(out).expanduser().resolve(), embedder.spec.name,
                                  {"kind": "trained_for_purpose", "factory": options.index}, embedder.device,
                                  skipped=[str(item.source) for item in plan])
        # Trained on every input, done or not, so a resumed run targets the same codes.
        index, index_info = train_index_for_inputs(embedder, plan, options.index, progress)
    return activate_plan(plan, embedder, index, index_info or {}, options.settings, batch_size=options.batch_size,
                         progress=progress, out=Path(out).expanduser().resolve())
