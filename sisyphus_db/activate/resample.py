"""Pillow's bilinear resize, reproduced in torch so that gradients flow through it.

The ingest resizes with Pillow (`prepare_image`): antialiased bilinear, a horizontal pass
then a vertical one, each rounded to uint8. Deep features of smooth pictures are
sensitive to differences of a fraction of a grey level, so an activation optimised
through torch's own interpolation would pull a feature the ingest never computes. Here
the same coefficients (Pillow's `precompute_coeffs`) are applied as two matrices, and
the two roundings are kept in the forward pass with a straight-through gradient.
"""

from __future__ import annotations

from functools import lru_cache

import torch

BILINEAR_SUPPORT = 1.0


@lru_cache(maxsize=64)
def _coefficients(in_size: int, out_size: int) -> tuple[tuple[float, ...], ...]:
    """(out_size rows of in_size weights): Pillow's Resample.c precompute_coeffs for the bilinear filter."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = BILINEAR_SUPPORT * filterscale
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        weights = [0.0] * in_size
        total = 0.0
        for x in range(xmin, xmax):
            distance = abs((x - center + 0.5) / filterscale)
            weight = 1.0 - distance if distance < 1.0 else 0.0
            weights[x] = weight
            total += weight
        if total != 0.0:
            weights = [w / total for w in weights]
        rows.append(tuple(weights))
    return tuple(rows)


def _matrix(in_size: int, out_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(_coefficients(in_size, out_size), dtype=dtype, device=device)


def round_to_uint8_levels(image: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] values to the 256 uint8 levels (clipped) in the forward pass; identity gradient."""
    rounded = torch.round(image.clamp(0.0, 1.0) * 255.0) / 255.0
    return image + (rounded - image).detach()


def pil_bilinear_resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, C, height, width), as Pillow resizes a uint8 image (to within a level)."""
    in_h, in_w = image.shape[-2:]
    out = image
    if in_w != width:
        out = round_to_uint8_levels(out @ _matrix(in_w, width, image.device, image.dtype).T)
    if in_h != height:
        out = round_to_uint8_levels(_matrix(in_h, height, image.device, image.dtype) @ out)
    return out


def center_crop_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """`prepare_image`'s center_crop mode: resize the shorter side to size, crop the middle."""
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    resized = pil_bilinear_resize(image, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[..., top:top + size, left:left + size]


__all__ = ["center_crop_resize", "pil_bilinear_resize", "round_to_uint8_levels"]
