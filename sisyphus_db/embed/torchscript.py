"""Bring-your-own model: any TorchScript file, named ``torchscript:/path/model.pt``.

The module receives the same input as the built-in trunks: a normalised float32
(N, 3, size, size) batch. If it returns (N, C, H, W) feature maps they are pooled; if it
returns (N, D) vectors they are used as they are. Which one, and the dimension, is found
by one forward pass on a dummy input, cached per file version.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from sisyphus_db.errors import ModelError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchScriptProbe:
    """What a TorchScript module returns: feature maps ("maps") or vectors ("vectors"), and their width."""

    output: str
    dim: int


_probes: dict[tuple[str, int, int], TorchScriptProbe] = {}
_probe_lock = threading.Lock()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def check_torchscript_file(path: Path) -> Path:
    """The resolved path, or ModelError when it is not a file."""
    if not path.is_file():
        raise ModelError(f"torchscript model file not found: {path}")
    return path.resolve()


def load_torchscript(path: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript file in eval mode, or fail with one line."""
    resolved = check_torchscript_file(path)
    try:
        # torch marks TorchScript as deprecated, but it is still the one portable file
        # format for a whole model; the warning would only repeat on every load.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(resolved), map_location=device)
    except Exception as exc:  # noqa: BLE001  (torch raises RuntimeError, ValueError or pickle errors)
        raise ModelError(f"cannot load torchscript model {resolved}: {_one_line(exc)}") from None
    return module.eval()


def probe_torchscript(path: Path, size: int) -> TorchScriptProbe:
    """Run a dummy (1, 3, size, size) batch through the module to learn its output kind and dim."""
    resolved = check_torchscript_file(path)
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    with _probe_lock:
        cached = _probes.get(key)
    if cached is not None:
        return cached
    module = load_torchscript(resolved)
    try:
        with torch.inference_mode():
            output = module(torch.zeros(1, 3, size, size))
    except Exception as exc:  # noqa: BLE001  (any error inside a foreign model)
        raise ModelError(
            f"torchscript model {resolved} failed on a 1x3x{size}x{size} input: {_one_line(exc)}"
        ) from None
    if not isinstance(output, torch.Tensor) or output.ndim not in (2, 4) or output.shape[0] != 1:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelError(
            f"torchscript model {resolved} returned {shape}: expected (N, C, H, W) feature maps or (N, D) vectors"
        )
    probe = TorchScriptProbe(output="maps" if output.ndim == 4 else "vectors", dim=int(output.shape[1]))
    logger.debug("torchscript model %s returns %s of width %d", resolved, probe.output, probe.dim)
    with _probe_lock:
        _probes[key] = probe
    return probe
