"""The JSON manifest written next to every activated image, and what the ingest keeps of it.

`photo.jpg` activated into DIR gets `DIR/photo.jpg` and `DIR/photo.jpg.activation.json`.
The ingest (a decoding worker, so no torch here) reads the manifest of each image it
loads and stores the provenance in `frames.metadata["activation"]`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".activation.json"
MANIFEST_VERSION = 1

# What the frame row keeps: enough to find the original and judge the change, not the whole run.
_FRAME_KEYS = ("original", "original_sha256", "model", "psnr", "ssim", "psnr_target", "iterations")


def manifest_path(image_path: Path | str) -> Path:
    path = Path(image_path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def write_manifest(image_path: Path, document: dict[str, Any]) -> Path:
    """Write the manifest atomically (it is the mark that the image is done, so never half of it)."""
    target = manifest_path(image_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as tmp:
            json.dump(document, tmp, indent=2, sort_keys=True)
            tmp.write("\n")
            os.fchmod(tmp.fileno(), 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def read_manifest(image_path: Path | str) -> dict[str, Any] | None:
    """The manifest next to an image, None when there is none or it is not an activation manifest."""
    path = manifest_path(image_path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable activation manifest (%s); the image is ingested without it", path, exc)
        return None
    if not isinstance(document, dict) or document.get("activated") is not True:
        return None
    return document


def activation_metadata(image_path: Path | str) -> dict[str, Any]:
    """`{"activation": {...}}` for frames.metadata when the image has a manifest, else {}."""
    document = read_manifest(image_path)
    if document is None:
        return {}
    kept: dict[str, Any] = {"activated": True}
    kept.update({key: document[key] for key in _FRAME_KEYS if key in document})
    index = document.get("index")
    if isinstance(index, dict):
        kept["index"] = {key: index[key] for key in ("kind", "factory") if key in index}
    return {"activation": kept}
