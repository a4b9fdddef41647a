"""Class focus: re-weight a feature map by one ImageNet class's classifier weights before pooling.

The class activation map (Zhou et al., CAM) of class c is sum_k w_c[k] F[k, y, x]; its
positive part, scaled to a maximum of 1, weights every position of the map, so the pooled
query describes where the classifier sees the class ("a street with a scooter" -> the
scooter) instead of the whole view. Needs a model with a linear ImageNet head on the same
channels (efficientnet-lite0, resnet50); the others refuse.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sisyphus_db.embed.models import ModelSpec
from sisyphus_db.errors import ModelError

FOCUS_FAMILIES = ("efficientnet-lite0", "resnet50")


def class_direction(spec: ModelSpec, name: str) -> tuple[npt.NDArray[np.float32], str]:
    """The classifier row of the class under this model (unit length) and the class's full name."""
    from sisyphus_db.embed.classes import class_query

    if spec.family not in FOCUS_FAMILIES:
        raise ModelError(f"--focus needs a model with an ImageNet classifier head ({', '.join(FOCUS_FAMILIES)}), "
                         f"not {spec.name}")
    return class_query(spec, name)


def activation_map(fmap: npt.NDArray[np.float32], direction: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(C, h, w) map and (C,) class row -> (h, w) weights in [0, 1] (positive CAM over its maximum)."""
    cam = np.maximum(np.tensordot(direction, fmap, axes=(0, 0)), 0.0)
    peak = float(cam.max())
    if peak <= 0.0:
        # The class is nowhere: leave the map as it is rather than zero it.
        return np.ones_like(cam, dtype=np.float32)
    return (cam / peak).astype(np.float32)


def focus_map(fmap: npt.NDArray[np.float32], direction: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The feature map with each position scaled by the class's activation there."""
    return (fmap * activation_map(fmap, direction)[None, :, :]).astype(np.float32)
