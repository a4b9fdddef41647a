"""Importing torchvision safely next to a CPU-only torch.

Every torchvision wheel for Linux on PyPI is a CUDA build. Next to the CPU torch wheel its
import dies with ``RuntimeError: operator torchvision::nms does not exist`` because the
compiled ops library cannot load, so the fake-kernel registrations in ``torchvision._meta``
refer to schemas nobody declared. Declaring the two schemas ourselves lets the pure-Python
parts (``torchvision.models``, ``transforms.v2``) import; the missing kernels are never
called by sisyphus. A matching torch/torchvision pair imports on the first try and is left
untouched. All project code imports torchvision through :func:`import_torchvision`.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import ModuleType

logger = logging.getLogger(__name__)

_MISSING_OP_TEXT = "torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_lock = threading.Lock()
# Kept alive for the life of the process: dropping a torch.library.Library object
# unregisters what it defined.
_fragment: object | None = None


def _forget_partial_import() -> None:
    """Drop the half-initialised torchvision modules a failed import leaves behind."""
    for module_name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        del sys.modules[module_name]


def _declare_missing_schemas() -> None:
    global _fragment
    if _fragment is not None:
        return
    import torch

    fragment = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        fragment.define(schema)
    _fragment = fragment


def import_torchvision() -> ModuleType:
    """Import and return torchvision, declaring the nms/qnms schemas only if the import needs them."""
    with _lock:
        try:
            import torchvision
        except RuntimeError as exc:
            if _MISSING_OP_TEXT not in str(exc):
                raise
            logger.debug("torchvision's compiled ops do not match torch; declaring nms/qnms schemas")
            _forget_partial_import()
            _declare_missing_schemas()
            import torchvision
        return torchvision
