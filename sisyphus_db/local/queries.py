"""Query vectors for the local methods: a query image (or a box of it), optionally class-focused.

- global: the model's own pooling over the model-size feature map (what ingest stores),
  so a --box or --focus query stays comparable with the pooled frame vectors;
- regions: max pooling over the feature map at REGION_QUERY_SIZE px, like a region vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.embed.embedder import Embedder
from sisyphus_db.errors import InputError
from sisyphus_db.local.grid import Region, check_box
from sisyphus_db.local.regions import pool_regions, unit_rows

# Frames' regions are pooled from a 448 px input, where an object covering 10-30 % of the
# frame spans about 45-135 px; the query (all object) is embedded at a similar scale.
# Measured on generated objects (benchmarks/results/objects.md): mAP 0.35 at 448 px,
# 0.47 at 224 px, 0.60 at 128 px.
REGION_QUERY_SIZE = 128


@dataclass(frozen=True)
class QueryImage:
    rgb: npt.NDArray[np.uint8]
    path: Path
    box: tuple[int, int, int, int] | None

    def description(self) -> dict[str, Any]:
        document: dict[str, Any] = {"kind": "image", "paths": [str(self.path.resolve())]}
        if self.box is not None:
            document["box"] = list(self.box)
        return document


def load_query_image(path: Path, box: tuple[int, int, int, int] | None = None) -> QueryImage:
    """The query image, cropped to the box (checked against the image's size)."""
    from sisyphus_db.media.images import load_image

    rgb = load_image(path).rgb
    if box is not None:
        check_box(box, rgb.shape[1], rgb.shape[0])
        x0, y0, x1, y1 = box
        rgb = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    return QueryImage(rgb, Path(path), box)


def pooled_map(fmap: npt.NDArray[np.float32], pooling: str) -> npt.NDArray[np.float32]:
    """(C, h, w) -> unit (C,) with avg, max or GeM pooling over every position."""
    whole = [Region(1, 0, 0, fmap.shape[1], fmap.shape[2])]
    if pooling == "avg":
        return unit_rows(fmap.mean(axis=(1, 2))[None, :])[0]
    return pool_regions(fmap, whole, pooling)[0]


def query_vector(embedder: Embedder, rgb: npt.NDArray[np.uint8], *, method: str,
                 direction: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
    """The unit query vector of an image for a method, class-focused when a direction is given."""
    from sisyphus_db.local.features import feature_maps
    from sisyphus_db.local.focus import focus_map

    if method == "global":
        if direction is None:
            return embedder.embed_images([rgb])[0]
        fmap = feature_maps(embedder, [rgb], size=embedder.spec.input_size)[0]
        vector = pooled_map(focus_map(fmap, direction), embedder.spec.pooling)
    else:
        fmap = feature_maps(embedder, [rgb], size=REGION_QUERY_SIZE)[0]
        if direction is not None:
            fmap = focus_map(fmap, direction)
        vector = pooled_map(fmap, "max")
    if not np.isfinite(vector).all() or float(np.linalg.norm(vector)) == 0.0:
        raise InputError("the query image has no direction (an all-zero feature map)")
    return vector.astype(np.float32)
