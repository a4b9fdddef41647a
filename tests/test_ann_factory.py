"""Factory choice and validation: sizes, dimensions, GPU-legal PQ, the 39-per-list rule."""

from __future__ import annotations

import pytest

from sisyphus_db.ann.factory import (
    GPU_PQ_DSUB,
    GPU_PQ_M,
    choose_factory,
    nlist_for,
    parse_factory,
    validate_factory,
)
from sisyphus_db.errors import AnnIndexError


@pytest.mark.parametrize("n", [1, 100, 19_999])
def test_small_corpora_get_flat(n: int) -> None:
    assert choose_factory(n, 512) == "Flat"


def test_middle_corpora_get_ivf_flat() -> None:
    assert choose_factory(100_000, 256) == "IVF1024,Flat"
    assert choose_factory(20_000, 64) == "IVF512,Flat"


def test_large_corpora_get_ivf_pq() -> None:
    f = choose_factory(10_000_000, 2048)
    spec = parse_factory(f)
    assert f.startswith("IVF") and spec.pq_m is not None
    assert spec.nlist == 16384
    assert "_HNSW32," in f  # lists found through a graph over the centroids on the CPU
    assert "HNSW" not in choose_factory(10_000_000, 2048, gpu=True)
    assert "HNSW" not in choose_factory(2_000_000, 128)


def test_over_budget_switches_to_pq() -> None:
    # 500k x 2048 float32 is 4 GB: over a 1 GiB budget even though n is "middle"
    f = choose_factory(500_000, 2048, memory_budget_bytes=1 << 30)
    assert "PQ" in f


@pytest.mark.parametrize("d", [64, 96, 100, 128, 256, 384, 512, 768, 1000, 1280, 2048])
@pytest.mark.parametrize("gpu", [False, True])
def test_pq_m_divides_d_and_is_gpu_legal(d: int, gpu: bool) -> None:
    if gpu and d in (100, 1000):
        # no GPU-legal M gives a GPU-supported sub-dimension (e.g. 100/20 = 5)
        with pytest.raises(AnnIndexError, match=f"^no product quantizer fits dimension {d}"):
            choose_factory(5_000_000, d, gpu=gpu)
        return
    spec = parse_factory(choose_factory(5_000_000, d, gpu=gpu))
    assert spec.pq_m is not None
    assert d % spec.pq_m == 0
    assert spec.pq_m in GPU_PQ_M
    if gpu:
        assert d // spec.pq_m in GPU_PQ_DSUB


@pytest.mark.parametrize("n", [20_000, 50_000, 123_456, 1_000_000, 30_000_000])
def test_nlist_power_of_two_with_39_points_per_list(n: int) -> None:
    nlist = nlist_for(n)
    assert nlist & (nlist - 1) == 0
    assert n >= 39 * nlist
    # close to 4*sqrt(n) unless the 39-per-list cap binds
    assert nlist <= 2 * 4 * n**0.5


def test_validate_refuses_too_few_training_points_per_list() -> None:
    with pytest.raises(AnnIndexError) as exc:
        validate_factory("IVF1024,PQ16", 10_000, 128)
    assert str(exc.value) == (
        "IVF1024 needs at least 39936 training vectors (39 per list), got 10000: "
        "use fewer lists or a Flat index"
    )


def test_validate_accepts_exactly_39_per_list() -> None:
    spec = validate_factory("IVF16,Flat", 39 * 16, 32)
    assert spec.nlist == 16 and spec.pq_m is None


def test_validate_rejects_pq_m_not_dividing_d() -> None:
    with pytest.raises(AnnIndexError, match=r"^PQ12 does not divide the dimension 64"):
        validate_factory("IVF16,PQ12", 10_000, 64)


def test_validate_rejects_unknown_factory() -> None:
    with pytest.raises(AnnIndexError, match="faiss cannot build factory 'Bogus7'"):
        validate_factory("Bogus7", 10_000, 64)


def test_every_chosen_factory_validates() -> None:
    for n in (1_000, 25_000, 300_000, 2_000_000):
        for d in (64, 512, 1280):
            f = choose_factory(n, d)
            validate_factory(f, n, d)
