"""Text queries by ImageNet class name: the classifier's weight row as a query direction.

The built-in models were trained with a linear ImageNet classifier on their pooled
features; the row of that classifier for a class points where the features of that
class lie, so it can be searched like any embedding (`sisyphus search --text CLASS`).
This is exact for the pooling the head was trained on (avg for efficientnet-lite0 and
resnet50) and an approximation for the others.
"""

from __future__ import annotations

import difflib
import functools
import logging

import numpy as np
import numpy.typing as npt

from sisyphus_db.embed.models import ModelSpec
from sisyphus_db.errors import InputError, ModelError

logger = logging.getLogger(__name__)

# Where each family keeps its ImageNet classifier in the weights file.
_CLASSIFIER_KEYS = {"efficientnet-lite0": "_fc.weight", "resnet50": "fc.weight"}
_HEAD_POOLING = "avg"


@functools.cache
def imagenet_categories() -> tuple[str, ...]:
    from sisyphus_db.embed._torchvision import import_torchvision

    import_torchvision()
    from torchvision.models import _meta

    return tuple(_meta._IMAGENET_CATEGORIES)


def resolve_class(name: str) -> int:
    """The class index for a name: exact (case-insensitive), else the only name containing it."""
    wanted = " ".join(name.lower().replace("_", " ").split())
    categories = [category.lower() for category in imagenet_categories()]
    if wanted in categories:
        return categories.index(wanted)
    containing = [i for i, category in enumerate(categories) if wanted and wanted in category]
    if len(containing) == 1:
        return containing[0]
    if len(containing) > 1:
        options = ", ".join(imagenet_categories()[i] for i in containing[:8])
        raise InputError(f"class {name!r} is ambiguous: {options}")
    close = difflib.get_close_matches(wanted, categories, n=5, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else " (see the 1000 ImageNet class names)"
    raise InputError(f"unknown class {name!r}{hint}")


def class_query(spec: ModelSpec, name: str) -> tuple[npt.NDArray[np.float32], str]:
    """The unit query vector for an ImageNet class under this model, and the class's full name."""
    import torch

    key = _CLASSIFIER_KEYS.get(spec.family)
    if key is None:
        raise ModelError(f"--text needs a model with an ImageNet classifier (efficientnet-lite0, resnet50), "
                         f"not {spec.name}")
    index = resolve_class(name)
    state = torch.load(spec.weights_path, map_location="cpu", weights_only=True)
    weights = state.get("state_dict", state).get(key)
    if weights is None or weights.shape[1] != spec.dim:
        raise ModelError(f"the weights of {spec.name} hold no {spec.dim}-d ImageNet classifier ({key})")
    if spec.pooling != _HEAD_POOLING:
        logger.warning("the classifier was trained on %s-pooled features; with %s pooling --text is approximate",
                       _HEAD_POOLING, spec.pooling)
    row = weights[index].float().numpy()
    return (row / np.linalg.norm(row)).astype(np.float32), imagenet_categories()[index]
