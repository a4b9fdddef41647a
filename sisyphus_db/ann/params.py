"""Setting search-time parameters through faiss's ParameterSpace, which fails loudly.

The original sisyphus set `index.nprobes = ...`: a Python attribute faiss never reads, so
every search probed one list. ParameterSpace knows the real names and raises for a name
that is misspelt or does not apply to the index, which we turn into AnnIndexError.

nprobe on a non-IVF (Flat, exact) index is an error, not a no-op: asking for a probe
count means the caller believes the search is approximate, and silently ignoring the
value is exactly the bug we are avoiding. Pass nprobe=None for Flat indexes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sisyphus_db.ann.device import is_gpu_index
from sisyphus_db.ann.factory import _first_line
from sisyphus_db.errors import AnnIndexError

logger = logging.getLogger(__name__)


def check_nprobe(index: Any, nprobe: int | None) -> int | None:
    """Validate nprobe for this index: a positive int for IVF, None for anything else."""
    import faiss

    if nprobe is None:
        return None
    if isinstance(nprobe, bool) or int(nprobe) != nprobe or nprobe < 1:
        raise AnnIndexError(f"nprobe must be a positive integer, got {nprobe!r}")
    if faiss.try_extract_index_ivf(index) is None and not is_gpu_index(index):
        raise AnnIndexError(
            f"nprobe={nprobe} applies only to IVF indexes; this {type(index).__name__} "
            "index is exact: leave nprobe unset"
        )
    return int(nprobe)


def _parameter_space(index: Any) -> Any:
    import faiss

    if is_gpu_index(index):
        # GPU indexes have their own parameter space in GPU builds of faiss
        return faiss.GpuParameterSpace()
    return faiss.ParameterSpace()


def set_parameter(index: Any, name: str, value: float) -> None:
    """Set one parameter by its faiss name; AnnIndexError when faiss does not accept it."""
    try:
        _parameter_space(index).set_index_parameter(index, name, float(value))
    except RuntimeError as exc:
        raise AnnIndexError(
            f"faiss rejected parameter {name}={value}: {_first_line(exc)}"
        ) from exc


def apply_search_params(
    index: Any,
    *,
    nprobe: int | None = None,
    params: Mapping[str, float] | None = None,
) -> None:
    """Set search parameters on the index itself (they persist for later searches).

    nprobe: lists probed by an IVF index (error on non-IVF indexes, see module doc).
    params: any other faiss ParameterSpace names, e.g. {"ht": 64} or {"k_factor": 4}.
    """
    checked = check_nprobe(index, nprobe)
    if checked is not None:
        set_parameter(index, "nprobe", checked)
    for name, value in (params or {}).items():
        set_parameter(index, name, value)
    logger.debug("search parameters set: nprobe=%s %s", checked, dict(params or {}))
