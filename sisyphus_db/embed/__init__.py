"""Embedding: backbones, pooling, preprocessing and batched extraction.

Names are loaded lazily (PEP 562) so that decoding worker processes, which only need
:func:`prepare_image` from ``sisyphus_db.embed.preprocess``, never import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sisyphus_db.embed.embedder import Embedder, clear_embedder_cache, forward_throughput, load_embedder
    from sisyphus_db.embed.models import (
        DEFAULT_MODEL,
        ModelInfo,
        ModelName,
        ModelSpec,
        get_model_spec,
        list_models,
        parse_model_name,
    )
    from sisyphus_db.embed.pooling import POOLINGS
    from sisyphus_db.embed.preprocess import make_preprocessing, prepare_batch, prepare_image

_EXPORTS: dict[str, str] = {
    "Embedder": "embedder",
    "clear_embedder_cache": "embedder",
    "forward_throughput": "embedder",
    "load_embedder": "embedder",
    "DEFAULT_MODEL": "models",
    "ModelInfo": "models",
    "ModelName": "models",
    "ModelSpec": "models",
    "get_model_spec": "models",
    "list_models": "models",
    "parse_model_name": "models",
    "POOLINGS": "pooling",
    "make_preprocessing": "preprocess",
    "prepare_batch": "preprocess",
    "prepare_image": "preprocess",
}

__all__ = [
    "DEFAULT_MODEL",
    "POOLINGS",
    "Embedder",
    "ModelInfo",
    "ModelName",
    "ModelSpec",
    "clear_embedder_cache",
    "forward_throughput",
    "get_model_spec",
    "list_models",
    "load_embedder",
    "make_preprocessing",
    "parse_model_name",
    "prepare_batch",
    "prepare_image",
]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value
