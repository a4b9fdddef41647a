"""Reading a picture in its own mode and writing its activated version in the same format family.

Activation keeps what a publisher expects: the same size, the same mode (RGB, RGBA or L;
other modes are refused with one line rather than silently converted) and the same
format family (JPEG stays JPEG at quality 100 without chroma subsampling, PNG and the
other lossless formats stay lossless). Alpha is never changed: it is a mask, and the
model sees the picture composited over white, as the ingest does.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sisyphus_db.errors import MediaError
from sisyphus_db.media.images import DEFAULT_MAX_PIXELS, load_image

logger = logging.getLogger(__name__)

SUPPORTED_MODES = ("RGB", "RGBA", "L")
JPEG_QUALITY = 100
_ORIENTATION = 0x0112
_LOSSY = {"JPEG"}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "JPEG": {"quality": JPEG_QUALITY, "subsampling": 0},
    "WEBP": {"lossless": True, "quality": 100},
    "PNG": {"compress_level": 6},
    "TIFF": {"compression": "tiff_deflate"},
}


@dataclass(frozen=True)
class SourceImage:
    """A picture to activate: its stored pixels and what the model sees of them."""

    path: Path
    sha256: str
    format: str  # Pillow's format name: JPEG, PNG, ...
    mode: str  # RGB, RGBA or L
    pixels: np.ndarray  # uint8 (H, W, C): C = 3 (RGB), 4 (RGBA) or 1 (L)
    exif_transposed: bool

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @property
    def colour(self) -> np.ndarray:
        """The channels activation may change: (H, W, 3) or (H, W, 1)."""
        return self.pixels[..., :1] if self.mode == "L" else self.pixels[..., :3]

    @property
    def alpha(self) -> np.ndarray | None:
        return self.pixels[..., 3] if self.mode == "RGBA" else None

    @property
    def lossy(self) -> bool:
        return self.format in _LOSSY


def read_source(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """Decode a picture fully (the ingest's loader checks it first: broken files fail the same way)."""
    loaded = load_image(path, max_pixels=max_pixels)  # MediaError for missing, broken, huge files
    with Image.open(path) as opened:
        opened.load()
        image_format = str(opened.format or "")
        # Written upright without the EXIF orientation: a viewer shows the same picture.
        transposed = opened.getexif().get(_ORIENTATION, 1) not in (1, None)
        oriented = ImageOps.exif_transpose(opened) if transposed else opened
        mode = oriented.mode
        if mode not in SUPPORTED_MODES:
            raise MediaError(f"{path}: mode {mode} is not supported for activation (supported: "
                             f"{', '.join(SUPPORTED_MODES)}): convert the image first")
        if image_format not in _SAVE_OPTIONS and image_format not in ("BMP",):
            raise MediaError(f"{path}: format {image_format or 'unknown'} is not supported for activation "
                             "(JPEG, PNG, WEBP, TIFF, BMP)")
        pixels = np.asarray(oriented, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return SourceImage(path, loaded.sha256, image_format, mode, np.ascontiguousarray(pixels), transposed)


def model_view(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """What the ingest feeds the model: (H, W, 3) uint8 RGB, alpha composited over white."""
    rgb = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour
    if alpha is None:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.clip(np.rint(rgb * a + 255.0 * (1.0 - a)), 0, 255).astype(np.uint8)


def with_colour(source: SourceImage, colour: np.ndarray) -> np.ndarray:
    """The source's pixels with new colour channels (alpha kept as it was)."""
    if source.mode == "RGBA":
        return np.concatenate([colour, source.pixels[..., 3:]], axis=2)
    return colour


def encode(source: SourceImage, pixels: np.ndarray) -> bytes:
    """The activated pixels in the source's format (lossless, or JPEG at quality 100, 4:4:4)."""
    array = pixels[..., 0] if source.mode == "L" else pixels
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), mode=source.mode).save(
        buffer, format=source.format, **_SAVE_OPTIONS.get(source.format, {}))
    return buffer.getvalue()


def decode(data: bytes, mode: str) -> np.ndarray:
    """Bytes from `encode` back to (H, W, C) uint8, to measure what was really written."""
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert(mode), dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array
