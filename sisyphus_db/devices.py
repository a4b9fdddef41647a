"""Choosing the torch device: `auto` takes CUDA when present, `cuda` insists on it."""

from __future__ import annotations

from sisyphus_db.errors import DeviceError


def resolve_torch_device(requested: str) -> str:
    """Map auto|cpu|cuda to a torch device string, failing clearly when CUDA is missing."""
    import torch

    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda was asked for but torch sees no CUDA GPU")
        return "cuda"
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    raise DeviceError(f"unknown device {requested!r}: expected auto, cpu or cuda")
