"""Choosing and checking faiss factory strings (autofaiss-style rules of thumb).

The index is a derived sidecar: these rules only decide its shape. Distances are always
computed with METRIC_L2 on unit vectors (see `sisyphus_db.ann.metric`).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from sisyphus_db.errors import AnnIndexError

logger = logging.getLogger(__name__)

GIB = 1 << 30

# faiss k-means warns below 39 points per centroid: centroids are then poorly placed and
# lists become badly unbalanced, so we refuse instead of warning.
MIN_POINTS_PER_LIST = 39

# Below this many vectors brute force is fast (a few ms per query) and exact.
FLAT_MAX_N = 20_000

# Above this many vectors IVF-Flat search and memory both grow too much; compress.
IVF_FLAT_MAX_N = 1_000_000
HNSW_QUANTIZER_MIN_NLIST = 16_384
HNSW_QUANTIZER_M = 32

# Sub-quantizer counts the classic GPU IVF-PQ accepts with 8-bit codes.
GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)

# Dimensions per sub-quantizer the classic GPU IVF-PQ kernels support.
GPU_PQ_DSUB = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 28, 32)

MIN_DSUB = 4  # dims per sub-quantizer: 128-d vectors get PQ32 (PQ16 plateaued at recall 0.92 at 10M)

# Codes wider than this cost memory without much recall gain for retrieval + exact rerank.
MAX_AUTO_M = 64

_IVF_RE = re.compile(r"\bIVF(\d+)")
_PQ_RE = re.compile(r"\bPQ(\d+)(?:x(\d+))?")


@dataclass(frozen=True)
class FactorySpec:
    """What `validate_factory` read from a factory string."""

    factory: str
    nlist: int | None  # None: not an IVF index
    pq_m: int | None  # None: no product quantizer
    pq_nbits: int


def nlist_for(n: int) -> int:
    """About 4*sqrt(n) lists as a power of two, capped to keep >= 39 training points per list."""
    if n < MIN_POINTS_PER_LIST:
        return 1
    target = 4.0 * math.sqrt(n)
    nlist = 1 << max(0, round(math.log2(target)))
    cap = 1 << int(math.floor(math.log2(n // MIN_POINTS_PER_LIST)))
    return max(1, min(nlist, cap))


def legal_pq_m(d: int, *, gpu: bool = False) -> list[int]:
    """GPU-legal sub-quantizer counts dividing d (with a GPU-supported sub-dimension when gpu)."""
    out = [m for m in GPU_PQ_M if d % m == 0]
    if gpu:
        out = [m for m in out if d // m in GPU_PQ_DSUB]
    return out


def _pick_m(n: int, d: int, nlist: int, budget: int, gpu: bool) -> int:
    candidates = legal_pq_m(d, gpu=gpu)
    if not candidates:
        raise AnnIndexError(
            f"no product quantizer fits dimension {d} on the GPU: use a Flat or IVF,Flat index"
        )
    # Prefer >= MIN_DSUB dims per sub-quantizer (k-means on 1-2-d sub-vectors gains little once
    # candidates are re-ranked exactly), but no coarser: at 10M x 128-d, PQ16's 8-d sub-vectors
    # ranked the true neighbours of dense clusters beyond the 4,000th candidate (recall@10
    # 0.92 at best); at most MAX_AUTO_M bytes per code.
    preferred = [m for m in candidates if m <= MAX_AUTO_M and d // m >= MIN_DSUB]
    preferred = preferred or [min(candidates)]
    for m in sorted(preferred, reverse=True):
        # codes + 8-byte ids per vector, plus the coarse centroids
        if n * (m + 8) + nlist * d * 4 <= budget:
            return m
    smallest = min(candidates)
    logger.warning(
        "even PQ%d (%d bytes per vector) does not fit the %d-byte memory budget", smallest,
        smallest + 8, budget,
    )
    return smallest


def choose_factory(
    n: int, d: int, *, memory_budget_bytes: int = 4 * GIB, gpu: bool = False
) -> str:
    """Pick a factory string for n vectors of dimension d.

    - `Flat` below 20k vectors: exact, no training, a few ms per query.
    - `IVF{nlist},Flat` up to 1M vectors when the raw vectors fit the budget.
    - `IVF{nlist},PQ{M}` beyond that or when over budget; M is GPU-legal, divides d and
      is the largest <= 64 with >= 4 dims per sub-quantizer that fits the budget.
    - from 16,384 lists on (~10M vectors) on the CPU, `IVF{nlist}_HNSW32,PQ{M}`: the lists
      are found through an HNSW graph over the centroids.
    nlist is ~4*sqrt(n) as a power of two with >= 39 points per list.
    """
    if n < 1 or d < 1:
        raise AnnIndexError(f"cannot choose an index for {n} vectors of dimension {d}")
    flat_bytes = n * d * 4
    if n < FLAT_MAX_N:
        return "Flat"
    nlist = nlist_for(n)
    ivf_flat_bytes = n * (d * 4 + 8) + nlist * d * 4
    if n < IVF_FLAT_MAX_N and ivf_flat_bytes <= memory_budget_bytes:
        return f"IVF{nlist},Flat"
    m = _pick_m(n, d, nlist, memory_budget_bytes, gpu)
    # Assigning n vectors to nlist flat centroids is n x nlist distances: at 10M x 16,384 lists,
    # ten minutes of a 2-core CPU. An HNSW graph over the centroids finds the nearest lists in
    # a few hundred distances (faiss's advice from ~16k lists on); GPUs keep the flat quantizer.
    quantizer = f"_HNSW{HNSW_QUANTIZER_M}" if nlist >= HNSW_QUANTIZER_MIN_NLIST and not gpu else ""
    logger.debug("n=%d d=%d: flat needs %d bytes, choosing IVF%d%s,PQ%d", n, d, flat_bytes, nlist, quantizer, m)
    return f"IVF{nlist}{quantizer},PQ{m}"


def parse_factory(factory: str) -> FactorySpec:
    """Read nlist and the PQ shape from a factory string, without checking them."""
    ivf = _IVF_RE.search(factory)
    pq = _PQ_RE.search(factory)
    return FactorySpec(
        factory=factory,
        nlist=int(ivf.group(1)) if ivf else None,
        pq_m=int(pq.group(1)) if pq else None,
        pq_nbits=int(pq.group(2)) if pq and pq.group(2) else 8,
    )


def validate_factory(factory: str, n_train: int, d: int) -> FactorySpec:
    """Refuse factory strings that faiss would train badly or not at all."""
    import faiss

    spec = parse_factory(factory)
    if spec.nlist is not None:
        if spec.nlist < 1:
            raise AnnIndexError(f"IVF{spec.nlist} needs at least one list")
        if n_train < MIN_POINTS_PER_LIST * spec.nlist:
            raise AnnIndexError(
                f"IVF{spec.nlist} needs at least {MIN_POINTS_PER_LIST * spec.nlist} training "
                f"vectors ({MIN_POINTS_PER_LIST} per list), got {n_train}: use fewer lists or "
                "a Flat index"
            )
    if spec.pq_m is not None:
        if spec.pq_m < 1 or d % spec.pq_m != 0:
            divisors = ",".join(str(m) for m in legal_pq_m(d))
            raise AnnIndexError(
                f"PQ{spec.pq_m} does not divide the dimension {d}: choose M among {divisors}"
            )
        centroids = 1 << spec.pq_nbits
        if n_train < centroids:
            # faiss aborts k-means with fewer points than centroids
            raise AnnIndexError(
                f"PQ{spec.pq_m} needs at least {centroids} training vectors, got {n_train}"
            )
    try:
        faiss.index_factory(d, factory, faiss.METRIC_L2)
    except RuntimeError as exc:
        raise AnnIndexError(f"faiss cannot build factory {factory!r}: {_first_line(exc)}") from exc
    return spec


def _first_line(exc: BaseException) -> str:
    """faiss errors carry a C++ location prefix; keep the part after the last colon-space."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.rsplit(": ", 1)[-1].strip()
