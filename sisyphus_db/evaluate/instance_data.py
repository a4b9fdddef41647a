"""Ground truth for instance search: objects pasted into scenes at known places and scales.

`generate_objects` / `generate_scenes` make offline test data (textured RGBA shapes;
street-like scenes of blocks, gradients and noise); `paste` puts an object (its alpha
where it has one) into a scene at a fraction of the scene's width and returns the
object's box, the ground truth for localisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from sisyphus_db.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Pasted:
    image: npt.NDArray[np.uint8]
    box: tuple[int, int, int, int]


def _object_rgba(rng: np.random.Generator, side: int) -> npt.NDArray[np.uint8]:
    """A textured shape (disc, triangle, square or star) with a transparent background."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64) / (side - 1) * 2 - 1
    shape = int(rng.integers(0, 4))
    radius = np.hypot(xs, ys)
    angle = np.arctan2(ys, xs)
    if shape == 0:
        mask = radius < 0.95
    elif shape == 1:
        mask = (ys < 0.8) & (ys > -0.9 + 1.9 * np.abs(xs))
    elif shape == 2:
        mask = (np.abs(xs) < 0.85) & (np.abs(ys) < 0.85)
    else:
        mask = radius < 0.55 + 0.4 * np.cos(5 * angle) ** 2
    colours = rng.uniform(0, 255, size=(3, 3))
    frequency = rng.uniform(3, 9)
    theta = rng.uniform(0, np.pi)
    stripes = (np.sin(frequency * np.pi * (xs * np.cos(theta) + ys * np.sin(theta))) > 0)[..., None]
    checks = ((np.floor((xs + 1) * rng.uniform(2, 5)) + np.floor((ys + 1) * rng.uniform(2, 5))) % 2 == 0)[..., None]
    rgb = np.where(stripes, colours[0], np.where(checks, colours[1], colours[2]))
    alpha = (mask * 255).astype(np.uint8)[..., None]
    return np.concatenate([np.clip(rgb, 0, 255).astype(np.uint8), alpha], axis=2)


def _scene_rgb(rng: np.random.Generator, width: int, height: int) -> npt.NDArray[np.uint8]:
    """Sky and road gradients, building-like blocks and noise: busy but object-free."""
    ys = np.linspace(0, 1, height)[:, None, None]
    sky = rng.uniform(120, 230, size=3)
    road = rng.uniform(40, 120, size=3)
    image = np.broadcast_to(sky * (1 - ys) + road * ys, (height, width, 3)).copy()
    for _ in range(int(rng.integers(6, 14))):
        w = int(rng.uniform(0.05, 0.3) * width)
        h = int(rng.uniform(0.1, 0.5) * height)
        x = int(rng.integers(0, max(1, width - w)))
        y = int(rng.integers(int(0.1 * height), max(int(0.1 * height) + 1, height - h)))
        image[y:y + h, x:x + w] = rng.uniform(30, 220, size=3)
        # windows: a regular grid of darker cells
        step = max(4, w // 5)
        image[y:y + h:step, x:x + w] *= 0.7
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def generate_objects(directory: Path, count: int, *, side: int = 160, seed: int = 0) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = directory / f"object_{i:03d}.png"
        Image.fromarray(_object_rgba(rng, side), mode="RGBA").save(path)
        paths.append(path)
    return paths


def generate_scenes(directory: Path, count: int, *, size: tuple[int, int] = (640, 360), seed: int = 1) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = directory / f"scene_{i:03d}.jpg"
        Image.fromarray(_scene_rgb(rng, *size)).save(path, quality=92)
        paths.append(path)
    return paths


def image_files(directory: Path, what: str) -> list[Path]:
    if not directory.is_dir():
        raise InputError(f"--{what} {directory}: not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"--{what} {directory}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_rgba(path: Path) -> npt.NDArray[np.uint8]:
    """An object image as RGBA (opaque when it has no alpha)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGBA"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from None


def paste(scene: npt.NDArray[np.uint8], obj: npt.NDArray[np.uint8], scale: float,
          rng: np.random.Generator) -> Pasted:
    """The object at `scale` x the scene's width, at a random place, alpha-blended."""
    if not 0.0 < scale <= 1.0:
        raise InputError(f"scales must be in (0, 1], got {scale}")
    height, width = scene.shape[:2]
    w = max(4, round(scale * width))
    h = max(4, round(w * obj.shape[0] / obj.shape[1]))
    if h > height:
        h = height
        w = max(4, round(h * obj.shape[1] / obj.shape[0]))
    resized = np.asarray(Image.fromarray(obj, mode="RGBA").resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64)
    x = int(rng.integers(0, width - w + 1))
    y = int(rng.integers(0, height - h + 1))
    alpha = resized[..., 3:4] / 255.0
    out = scene.astype(np.float64).copy()
    out[y:y + h, x:x + w] = out[y:y + h, x:x + w] * (1 - alpha) + resized[..., :3] * alpha
    return Pasted(np.clip(np.rint(out), 0, 255).astype(np.uint8), (x, y, x + w, y + h))
