"""Frame thumbnails: JPEGs of at most 320 px on the long side, cached under the data directory.

A thumbnail is named after the frame's id and content hash, so a frame whose image
changed gets a new one; it is written atomically, so concurrent first requests for the
same frame at worst both make it.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from sisyphus_db.errors import MediaError
from sisyphus_db.media.images import DEFAULT_MAX_PIXELS

THUMBNAIL_SIZE = 320
JPEG_QUALITY = 85


def thumbnail_path(cache_dir: Path, frame_id: int, sha256: str) -> Path:
    return cache_dir / f"{frame_id // 10_000:05d}" / f"{frame_id}-{sha256[:16]}.jpg"


def make_thumbnail(source: Path, target: Path, size: int = THUMBNAIL_SIZE) -> Path:
    """Write the thumbnail of `source` to `target` (atomically) unless it is there already."""
    if target.exists():
        return target
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                if image.width * image.height > DEFAULT_MAX_PIXELS:
                    raise MediaError(f"{source}: image too large for a thumbnail ({image.width}x{image.height})")
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
                upright = ImageOps.exif_transpose(image)
                upright.thumbnail((size, size))
                rgb = upright.convert("RGB")
    except FileNotFoundError:
        raise MediaError(f"the image file of this frame is missing: {source}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"the image file of this frame cannot be decoded: {source} ({exc})") from None
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(buffer.getvalue())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
