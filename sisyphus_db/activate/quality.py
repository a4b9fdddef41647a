"""How much an activated image differs from its original: PSNR and SSIM, in numpy.

Both take uint8 arrays of the same shape, (H, W) or (H, W, C); colour SSIM is the mean
of the per-channel SSIMs (the usual convention, e.g. scikit-image's channel_axis).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from sisyphus_db.errors import InputError

PEAK = 255.0
# Wang et al. 2004: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(original: np.ndarray, changed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if original.shape != changed.shape:
        raise InputError(f"cannot compare images of shapes {original.shape} and {changed.shape}")
    return original.astype(np.float64), changed.astype(np.float64)


def mse_for_psnr(psnr: float) -> float:
    """The mean squared error (0-255 scale) that gives this PSNR."""
    return PEAK * PEAK / (10.0 ** (psnr / 10.0))


def psnr(original: np.ndarray, changed: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over every pixel and channel; inf for identical images."""
    a, b = _pair(original, changed)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(PEAK * PEAK / mse)


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    def blur(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, SSIM_SIGMA, truncate=SSIM_RADIUS / SSIM_SIGMA, mode="reflect")

    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(original: np.ndarray, changed: np.ndarray) -> float:
    """Structural similarity (1.0 for identical images), mean over channels."""
    a, b = _pair(original, changed)
    if a.ndim == 2:
        return _ssim_channel(a, b)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))
