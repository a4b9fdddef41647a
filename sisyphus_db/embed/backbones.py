"""Building the torch network for a ModelSpec: normalise -> CNN trunk -> pooling.

The network takes the uint8 (N, H, W, 3) batch that :func:`prepare_image` makes, so the
whole per-pixel work after resizing happens on the device. Its output is the pooled,
not yet L2-normalised, (N, dim) float32 descriptor.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sisyphus_db.embed.models import NO_POOLING, ModelSpec
from sisyphus_db.embed.pooling import GlobalPool
from sisyphus_db.embed.preprocess import normalize
from sisyphus_db.errors import ModelError

logger = logging.getLogger(__name__)


class EmbeddingNet(nn.Module):
    """uint8 NHWC images -> normalised float -> trunk -> float32 pooled vectors."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, trunk: nn.Module, pooling: str, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.trunk = trunk
        self.pool: nn.Module = nn.Identity() if pooling == NO_POOLING else GlobalPool(pooling)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        images = normalize(batch, self.mean, self.std)
        features: torch.Tensor = self.trunk(images)
        # Pool in float32 even under CUDA autocast: GeM cubes activations, which would
        # overflow float16's 65504 for activations above ~40.
        with torch.autocast(device_type=features.device.type, enabled=False):
            pooled: torch.Tensor = self.pool(features.float())
        return pooled


class _EfficientNetFeatures(nn.Module):
    """The efficientnet-lite package's model up to its last conv (extract_features), no head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.model.extract_features(images)  # type: ignore[operator]
        return features


def _load_state_dict(path: Path, family: str) -> dict[str, Any]:
    try:
        # weights_only: a weights file must not be able to run code when it is loaded.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (zip, pickle and unpickler errors of many types)
        reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ModelError(f"cannot load {family} weights from {path}: {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # training checkpoints often wrap the weights
    if not isinstance(state, dict):
        raise ModelError(f"cannot load {family} weights from {path}: not a state dict")
    return state


def _apply_state_dict(model: nn.Module, state: dict[str, Any], path: Path, family: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or ["mismatch"])[0]
        raise ModelError(f"cannot load {family} weights from {path}: {reason}") from None


def _efficientnet_lite0_trunk(weights: Path) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # from_name + our own load instead of from_pretrained, which prints to stdout and
    # would fall back to a download if given no path.
    model = EfficientNet.from_name("efficientnet-lite0")
    _apply_state_dict(model, _load_state_dict(weights, "efficientnet-lite0"), weights, "efficientnet-lite0")
    model._fc = nn.Identity()  # the classifier is never used; keep it off the device
    return _EfficientNetFeatures(model)


def _resnet50_trunk(weights: Path) -> nn.Module:
    from sisyphus_db.embed._torchvision import import_torchvision

    torchvision = import_torchvision()
    model = torchvision.models.resnet50(weights=None)
    _apply_state_dict(model, _load_state_dict(weights, "resnet50"), weights, "resnet50")
    # Everything up to layer4: drop the global average pool and the fc classifier.
    return nn.Sequential(*list(model.children())[:-2])


def build_network(spec: ModelSpec, device: str) -> EmbeddingNet:
    """The eval-mode network for spec on device (channels_last on CUDA)."""
    weights = Path(spec.weights_path)
    if spec.family == "efficientnet-lite0":
        trunk = _efficientnet_lite0_trunk(weights)
    elif spec.family == "resnet50":
        trunk = _resnet50_trunk(weights)
    elif spec.family == "colour":
        from sisyphus_db.embed.colour import ColourPalette

        trunk = ColourPalette()
    elif spec.family == "torchscript":
        from sisyphus_db.embed.torchscript import load_torchscript

        trunk = load_torchscript(weights)
    else:
        raise ModelError(f"unknown model family {spec.family!r}")
    preprocessing = spec.preprocessing
    net = EmbeddingNet(trunk, spec.pooling, preprocessing["mean"], preprocessing["std"])
    net = net.eval().to(device)
    if device.startswith("cuda"):
        # NHWC is what cuDNN's tensor-core convolutions run fastest on.
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
    logger.info("loaded %s (%d-d, %s pooling) on %s", spec.name, spec.dim, spec.pooling, device)
    return net
