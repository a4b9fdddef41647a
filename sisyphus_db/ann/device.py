"""faiss CPU/GPU placement: one code path, GPU only when asked for and present."""

from __future__ import annotations

import logging
from typing import Any, Literal

from sisyphus_db.errors import DeviceError

logger = logging.getLogger(__name__)

FaissDevice = Literal["cpu", "cuda"]

# The classic GPU IVF-PQ needs float16 lookup tables from this many sub-quantizers on,
# otherwise the tables overflow shared memory.
FLOAT16_LUT_MIN_M = 56


def faiss_num_gpus() -> int:
    """GPUs faiss can use; 0 for CPU-only builds, which may lack the symbol entirely."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    if get is None or not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(get())
    except RuntimeError:  # a GPU build on a machine without a usable driver
        return 0


def resolve_faiss_device(requested: str) -> FaissDevice:
    """Map auto|cpu|cuda to the device faiss will use, failing clearly when cuda is missing."""
    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if faiss_num_gpus() < 1:
            raise DeviceError(
                "--device cuda was asked for but this faiss has no GPU support "
                "(install sisyphus-db[gpu] on a CUDA machine)"
            )
        return "cuda"
    if requested == "auto":
        return "cuda" if faiss_num_gpus() > 0 else "cpu"
    raise DeviceError(f"unknown device {requested!r}: expected auto, cpu or cuda")


def is_gpu_index(index: Any) -> bool:
    """True for faiss GpuIndex* objects (they must go through `to_cpu` before writing)."""
    return type(index).__name__.startswith("Gpu")


def _pq_m(index: Any) -> int:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    pq = getattr(faiss.downcast_index(ivf), "pq", None) if ivf is not None else None
    return int(pq.M) if pq is not None else 0


def to_gpu(index: Any, *, gpu_id: int = 0) -> Any:
    """Copy a CPU index onto a GPU; the resources object lives as long as the GPU index."""
    import faiss

    if is_gpu_index(index):
        return index
    if faiss_num_gpus() < 1:
        raise DeviceError(
            "--device cuda was asked for but this faiss has no GPU support "
            "(install sisyphus-db[gpu] on a CUDA machine)"
        )
    resources = faiss.StandardGpuResources()
    options = faiss.GpuClonerOptions()
    # For IVF-PQ the cloner maps `useFloat16` to the index's useFloat16LookupTables; only
    # set it for PQ (on IVF-Flat it would mean float16 storage of the vectors).
    options.useFloat16 = _pq_m(index) >= FLOAT16_LUT_MIN_M
    gpu_index: Any = faiss.index_cpu_to_gpu(resources, gpu_id, index, options)
    # Without this reference the resources could be freed while the index still uses them.
    gpu_index.referenced_objects = [*getattr(gpu_index, "referenced_objects", []), resources]
    logger.debug("moved %s to GPU %d", type(index).__name__, gpu_id)
    return gpu_index


def to_cpu(index: Any) -> Any:
    """A CPU copy of a GPU index (faiss cannot write GPU indexes); CPU indexes pass through."""
    import faiss

    if not is_gpu_index(index):
        return index
    return faiss.index_gpu_to_cpu(index)
