"""Turning decoded frames into model input.

Split in two on purpose:

- :func:`prepare_image` runs in the decoding worker processes (numpy + Pillow only; this
  module does not import torch at import time). It shrinks a frame of any size to the
  model's small uint8 input, so only ``size x size x 3`` bytes cross the process boundary
  instead of a whole 4K frame.
- :func:`normalize` runs inside the network on the device: scaling to [0, 1] and the
  mean/std normalisation are cheap elementwise work that the GPU does for free, and the
  uint8 batch is a quarter of the bytes of a float batch to copy there.

Resize policy, ``"stretch"`` (the default): the whole frame is resized to size x size,
ignoring the aspect ratio. Rare scenes in drive video are often at the edges of a wide
frame (a scooter on the kerb, a cone in the next lane); a centre crop of a 16:9 frame
would throw away 44 % of it. CNN features tolerate the anisotropic squeeze well, and every
frame, query or corpus, is squeezed the same way, so distances stay comparable.
``"center_crop"`` (resize the shorter side, crop the middle; what ImageNet evaluation
does) is available for TorchScript models trained that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sisyphus_db.errors import InputError, ModelError

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESIZE_MODES: tuple[str, ...] = ("stretch", "center_crop")
DEFAULT_SIZE = 224

# Bilinear with Pillow's antialiasing (its filter support grows when it shrinks an image)
# matches torchvision's antialiased bilinear resize that ImageNet models were evaluated with.
_RESAMPLE = Image.Resampling.BILINEAR


def make_preprocessing(
    size: int = DEFAULT_SIZE,
    resize: str = "stretch",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> dict[str, Any]:
    """The JSON-serialisable description of a model's input, as stored in the database."""
    if resize not in RESIZE_MODES:
        raise ModelError(f"unknown resize mode {resize!r}: choose one of {', '.join(RESIZE_MODES)}")
    return {
        "size": int(size),
        "resize": resize,
        "interpolation": "bilinear",
        "mean": [float(value) for value in mean],
        "std": [float(value) for value in std],
        "value_range": "rgb/255",
    }


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        shape = tuple(getattr(rgb, "shape", ()))
        raise InputError(f"expected an RGB image as a uint8 array of shape (H, W, 3), got {dtype} {shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(f"expected a non-empty image, got shape {tuple(rgb.shape)}")


def prepare_image(rgb: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
    """Resize an HxWx3 uint8 RGB frame to the model's size x size x 3 uint8 input."""
    _check_rgb(rgb)
    size = int(preprocessing["size"])
    mode = preprocessing.get("resize", "stretch")
    height, width = rgb.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    if mode == "stretch":
        if (height, width) != (size, size):
            image = image.resize((size, size), _RESAMPLE)
    elif mode == "center_crop":
        scale = size / min(height, width)
        new_width = max(size, round(width * scale))
        new_height = max(size, round(height * scale))
        if (new_height, new_width) != (height, width):
            image = image.resize((new_width, new_height), _RESAMPLE)
        left = (new_width - size) // 2
        top = (new_height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    else:
        raise ModelError(f"unknown resize mode {mode!r}: choose one of {', '.join(RESIZE_MODES)}")
    return np.asarray(image, dtype=np.uint8)


def prepare_batch(images: Sequence[np.ndarray], preprocessing: dict[str, Any]) -> np.ndarray:
    """prepare_image over a list, stacked to an N x size x size x 3 uint8 batch."""
    size = int(preprocessing["size"])
    if not images:
        return np.empty((0, size, size, 3), dtype=np.uint8)
    return np.stack([prepare_image(rgb, preprocessing) for rgb in images])


def normalize(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) on the device -> normalised float32 (N, 3, H, W).

    The permute is a view, so the result keeps NHWC memory: exactly the channels_last
    layout the CUDA convolutions want, at no copying cost. ``mean``/``std`` are (1, 3, 1, 1).
    """
    images = batch.permute(0, 3, 1, 2).float().div_(255.0)
    return images.sub_(mean).div_(std)
