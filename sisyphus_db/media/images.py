"""Load still images into RGB arrays, refusing broken ones loudly, and write frame JPEGs.

A training-data search tool must never ingest a half-decoded picture as if it were whole,
so truncation is an error (Pillow's LOAD_TRUNCATED_IMAGES is never switched on) and the
pixel count is checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from sisyphus_db.errors import MediaError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000

# EXIF tags: DateTimeOriginal and DateTimeDigitized live in the Exif sub-IFD, DateTime in IFD0.
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME_DIGITIZED = 36868
_DATETIME = 306
_EXIF_DATETIME_FORMAT = "%Y:%m:%d %H:%M:%S"


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image, upright (EXIF orientation applied), as H x W x 3 uint8 RGB."""

    rgb: np.ndarray
    width: int
    height: int
    sha256: str
    captured_at: datetime | None


def read_file_bytes(path: Path) -> bytes:
    """The file's bytes, or a one-line MediaError naming the file for the usual OS failures."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file") from None
    except PermissionError:
        raise MediaError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise MediaError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise MediaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise MediaError(f"{path}: empty file (0 bytes)")
    return data


def load_image(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file fully into upright RGB, with its sha256 and EXIF capture time."""
    path = Path(path)
    return decode_image(read_file_bytes(path), path, max_pixels=max_pixels)


def decode_image(data: bytes, name: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode image bytes (a file's, or an upload's) with the same checks; `name` only appears in messages."""
    if not data:
        raise MediaError(f"{name}: empty file (0 bytes)")
    path = name
    digest = hashlib.sha256(data).hexdigest()
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process switched it on; we cannot switch it off for them safely.
        logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on: truncated images may pass")
    image = _open_checked(path, data, max_pixels)
    try:
        image.load()  # force the full decode now, so truncation fails here and not later
    except Image.DecompressionBombError:
        raise MediaError(f"{path}: image too large (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(f"{path}: truncated or corrupt image ({_one_line(exc)})") from None
    captured_at = _exif_capture_time(image)
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must not lose the picture
        logger.warning("%s: ignoring unusable EXIF orientation (%s)", path, _one_line(exc))
        upright = image
    rgb = to_rgb_array(upright)
    height, width = rgb.shape[:2]
    return LoadedImage(rgb=rgb, width=width, height=height, sha256=digest, captured_at=captured_at)


def _open_checked(path: Path | str, data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse over-large images before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between its own limit and twice that; our limit decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise MediaError(f"{path}: image too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise MediaError(f"{path}: not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(f"{path}: truncated or corrupt image header ({_one_line(exc)})") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise MediaError(f"{path}: truncated or corrupt image header (size {width}x{height})")
    if width * height > max_pixels:
        raise MediaError(
            f"{path}: image too large ({width}x{height} = {width * height} pixels, limit {max_pixels})"
        )
    return image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow mode as H x W x 3 uint8: alpha over white, 16/32-bit scaled, CMYK converted."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Pillow's own convert('L') clips these instead of scaling, which turns a 16-bit
        # scan into a white sheet; scale to 8 bits ourselves.
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            scaled = np.clip(values, 0.0, 255.0) if values.max(initial=0.0) > 1.0 else values * 255.0
        else:
            scaled = values / 257.0 if values.max(initial=0) > 255 else values
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        # Transparent pixels often hold black or garbage colour; white is what a viewer shows.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def _exif_capture_time(image: Image.Image) -> datetime | None:
    try:
        exif = image.getexif()
        sub_ifd = exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001 - unreadable EXIF just means no capture time
        return None
    for value in (
        sub_ifd.get(_DATETIME_ORIGINAL),
        sub_ifd.get(_DATETIME_DIGITIZED),
        exif.get(_DATETIME),
    ):
        parsed = parse_exif_datetime(value)
        if parsed is not None:
            return parsed
    return None


def parse_exif_datetime(value: object) -> datetime | None:
    """'YYYY:MM:DD HH:MM:SS' (naive, as cameras write it) or None for blank/garbled values."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="ignore")
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip("\x00").strip()
    try:
        return datetime.strptime(text[:19], _EXIF_DATETIME_FORMAT)
    except ValueError:
        return None  # cameras without a clock write '0000:00:00 00:00:00' or spaces


def encode_jpeg(rgb: np.ndarray, path: Path | str, quality: int = 90) -> str:
    """Write rgb (H x W x 3 uint8) as a JPEG atomically; return the sha256 of the bytes written.

    The file appears whole or not at all (temporary file in the same folder, then
    os.replace), so a crashed worker never leaves a half-written frame behind.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 array, got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    data = buffer.getvalue()
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """The file appears whole or not at all: a crash never leaves half an image behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(data)
            # mkstemp creates 0600; frames are read by other processes (server, exports).
            os.fchmod(tmp.fileno(), 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def frame_jpeg_path(frames_dir: Path, source_id: int, frame_index: int) -> Path:
    """Where an extracted frame lives: frames_dir/<source_id>/<frame_index, 10 digits>.jpg."""
    return Path(frames_dir) / str(source_id) / f"{frame_index:010d}.jpg"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
