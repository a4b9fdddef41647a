"""Global pooling of CNN feature maps (N, C, H, W) into one vector per image (N, C).

- ``avg``: the mean over positions; what classification heads use, smooth and robust.
- ``max``: MAC (maximum activation of convolutions), the original sisyphus descriptor;
  keeps a strong local response even when the object covers a small part of the frame.
- ``gem``: generalised mean with p=3 (Radenović et al.), between avg (p=1) and max
  (p -> inf); the usual best choice for instance retrieval.
"""

from __future__ import annotations

import torch

POOLINGS: tuple[str, ...] = ("avg", "max", "gem")
GEM_P = 3.0
# GeM raises activations to the power p, so values must be positive; the clamp also
# keeps the 1/p root's gradient finite.
GEM_EPS = 1e-6


def _check_feature_maps(features: torch.Tensor) -> None:
    if features.ndim != 4:
        raise ValueError(f"expected feature maps of shape (N, C, H, W), got {tuple(features.shape)}")


def avg_pool(features: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial positions."""
    _check_feature_maps(features)
    return features.mean(dim=(2, 3))


def max_pool(features: torch.Tensor) -> torch.Tensor:
    """Maximum over the spatial positions (MAC)."""
    _check_feature_maps(features)
    return features.amax(dim=(2, 3))


def gem_pool(features: torch.Tensor, p: float = GEM_P, eps: float = GEM_EPS) -> torch.Tensor:
    """Generalised mean: (mean(clamp(x, eps) ** p)) ** (1 / p) over the spatial positions."""
    _check_feature_maps(features)
    return features.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


_POOL_FUNCTIONS = {"avg": avg_pool, "max": max_pool, "gem": gem_pool}


def pool(features: torch.Tensor, kind: str) -> torch.Tensor:
    """Pool (N, C, H, W) feature maps to (N, C) with one of POOLINGS."""
    try:
        function = _POOL_FUNCTIONS[kind]
    except KeyError:
        raise ValueError(f"unknown pooling {kind!r}: choose one of {', '.join(POOLINGS)}") from None
    return function(features)


class GlobalPool(torch.nn.Module):
    """Pooling as a module, so a network's last step is visible when it is printed."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in _POOL_FUNCTIONS:
            raise ValueError(f"unknown pooling {kind!r}: choose one of {', '.join(POOLINGS)}")
        self.kind = kind

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return pool(features, self.kind)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
