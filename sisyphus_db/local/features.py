"""Unpooled feature maps: the model's trunk (no pooling) on frames resized to a local size.

Region vectors and visual words need positions, so they read the last convolutional
feature map instead of the pooled vector. The trunk is fully convolutional, so it runs at
twice the model's input size by default (448 px for efficientnet-lite0 and resnet50: a
14 x 14 map instead of 7 x 7): a small object then covers a few cells of its own instead of
a fraction of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.embed.embedder import Embedder
from sisyphus_db.embed.models import NO_POOLING
from sisyphus_db.embed.preprocess import normalize, prepare_batch
from sisyphus_db.errors import InputError, ModelError

LOCAL_SCALE = 2  # local input size = LOCAL_SCALE x the model's input size


def local_size(embedder: Embedder) -> int:
    return LOCAL_SCALE * embedder.spec.input_size


def local_preprocessing(embedder: Embedder, size: int | None = None) -> dict[str, Any]:
    return {**embedder.spec.preprocessing, "size": int(size or local_size(embedder)), "resize": "stretch"}


def require_feature_maps(embedder: Embedder, what: str) -> None:
    if embedder.spec.pooling == NO_POOLING:
        raise ModelError(f"{what} needs a model that returns feature maps; {embedder.spec.name} returns vectors")


def feature_maps(embedder: Embedder, images: Sequence[np.ndarray], *, size: int | None = None,
                 batch_size: int = 8) -> npt.NDArray[np.float32]:
    """HxWx3 uint8 images -> (N, C, h, w) float32 feature maps of the trunk at `size` px."""
    import torch

    require_feature_maps(embedder, "local features")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    preprocessing = local_preprocessing(embedder, size)
    network = embedder.network
    parts: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(images), batch_size):
        batch = prepare_batch(images[start:start + batch_size], preprocessing)
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(embedder.device)
        with embedder._lock, torch.inference_mode():
            features = network.trunk(normalize(tensor, network.mean, network.std))
        if features.ndim != 4:
            raise ModelError(f"{embedder.spec.name}'s trunk returned shape {tuple(features.shape)}, not feature maps")
        parts.append(features.float().cpu().numpy())
    if not parts:
        return np.empty((0, embedder.spec.dim, 1, 1), dtype=np.float32)
    maps = np.concatenate(parts)
    if maps.shape[1] != embedder.spec.dim:
        raise ModelError(f"{embedder.spec.name}'s feature maps have {maps.shape[1]} channels, "
                         f"its vectors {embedder.spec.dim}")
    return maps
