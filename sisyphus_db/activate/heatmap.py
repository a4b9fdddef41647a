"""Where a change is least visible: a per-pixel scale from local luminance contrast.

Just-noticeable-difference models (e.g. Chou & Li 1995; the Active Indexing paper's
perceptual heat map) agree on the first-order effect: the eye misses a change hidden in
texture and sees the same change on a flat sky. The scale here is the local standard
deviation of the luminance in a small window, floored so that flat areas still get a
little, multiplied by alpha (a transparent pixel is never seen by the model), and
normalised to mean 1 so the PSNR projection, not the map, sets the overall strength.
"""

from __future__ import annotations

import torch
from torch.nn import functional

WINDOW = 5  # pixels: a texture's scale at normal viewing distance
FLOOR = 0.02  # in [0, 1] luminance units: flat areas keep a fraction of the budget
_LUMA = (0.299, 0.587, 0.114)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) or (N, 1, H, W) in [0, 1] -> (N, 1, H, W)."""
    if image.shape[1] == 1:
        return image
    weights = torch.tensor(_LUMA, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True)


def local_std(gray: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Standard deviation over a window around each pixel (reflect padding at the borders)."""
    pad = window // 2
    padded = functional.pad(gray, (pad, pad, pad, pad), mode="reflect" if min(gray.shape[-2:]) > pad else "replicate")
    mean = functional.avg_pool2d(padded, window, stride=1)
    mean_sq = functional.avg_pool2d(padded * padded, window, stride=1)
    return (mean_sq - mean * mean).clamp_min(0.0).sqrt()


@torch.no_grad()
def perceptual_heatmap(image: torch.Tensor, alpha: torch.Tensor | None = None, floor: float = FLOOR) -> torch.Tensor:
    """(N, C, H, W) image in [0, 1] (and optional (N, 1, H, W) alpha) -> (N, 1, H, W), mean 1 per image."""
    heat = local_std(luminance(image)).clamp_min(floor)
    if alpha is not None:
        heat = heat * alpha
    mean = heat.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return heat / mean
