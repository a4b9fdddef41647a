"""The quantized target of a feature: what a faiss index actually stores for it.

For IVF-PQ that is the coarse centroid of the feature's list plus the product-quantizer
reconstruction of its residual, i.e. `sa_decode(sa_encode(x))` of the IVF index; for a
plain PQ (or any other standalone codec) it is the codec's own round trip. Pulling the
feature toward it shrinks the quantization error that makes edited copies miss, and the
coarse margin (distance to the second-nearest centroid minus distance to the assigned
one) keeps the feature away from the border of its IVF cell.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sisyphus_db.errors import AnnIndexError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Targets:
    """Per feature: its quantized reconstruction and, for IVF, the two nearest coarse centroids."""

    vectors: np.ndarray  # (n, d) float32
    first: np.ndarray | None = None  # (n, d) assigned coarse centroid
    second: np.ndarray | None = None  # (n, d) second nearest coarse centroid
    info: dict[str, Any] = field(default_factory=dict)

    def rows(self, rows: slice | np.ndarray) -> Targets:
        return Targets(self.vectors[rows], None if self.first is None else self.first[rows],
                       None if self.second is None else self.second[rows], self.info)


def _codec(index: Any) -> tuple[Any, Any]:
    """(the part that encodes vectors, the IVF part or None), unwrapping IDMap and GPU copies."""
    import faiss

    from sisyphus_db.ann.device import to_cpu

    index = to_cpu(index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return ivf, ivf
    if hasattr(index, "id_map"):
        index = faiss.downcast_index(index.index)
    return index, None


def quantized_targets(index: Any, features: np.ndarray) -> Targets:
    """The index's reconstruction of each unit feature (n, d), and its coarse neighbourhood."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != int(index.d):
        raise AnnIndexError(f"the index holds {index.d}-d vectors, the model gives {features.shape[-1]}-d features")
    if not index.is_trained:
        raise AnnIndexError("the index is not trained: it has no quantizer to target")
    codec, ivf = _codec(index)
    try:
        vectors = codec.sa_decode(codec.sa_encode(features)).astype(np.float32)
    except RuntimeError as exc:
        raise AnnIndexError(f"the index ({type(codec).__name__}) cannot encode vectors standalone: "
                            f"{str(exc).strip().splitlines()[-1]}") from None
    first = second = None
    if ivf is not None and int(ivf.nlist) >= 2:
        centroids = ivf.quantizer.reconstruct_n(0, int(ivf.nlist)).astype(np.float32)
        _, nearest = ivf.quantizer.search(features, 2)
        first, second = centroids[nearest[:, 0]], centroids[nearest[:, 1]]
    if ivf is None and int(codec.sa_code_size()) >= 4 * int(index.d):
        raise AnnIndexError(f"the index ({type(codec).__name__}) stores vectors exactly: activation needs a "
                            "quantizing index, e.g. IVF4,PQ16x4 or PQ16x4")
    return Targets(vectors, first, second, {"codec": type(codec).__name__,
                                            "nlist": int(ivf.nlist) if ivf is not None else None})
