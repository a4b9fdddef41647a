"""Pooling math on small hand-checked tensors."""

from __future__ import annotations

import pytest
import torch

from sisyphus_db.embed.pooling import GEM_EPS, POOLINGS, GlobalPool, avg_pool, gem_pool, max_pool, pool


@pytest.fixture
def maps() -> torch.Tensor:
    # One image, two channels, 2x2 positions.
    return torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 8.0]]]])


def test_poolings_are_named() -> None:
    assert POOLINGS == ("avg", "max", "gem")


def test_avg_pool(maps: torch.Tensor) -> None:
    assert torch.allclose(avg_pool(maps), torch.tensor([[2.5, 2.0]]))


def test_max_pool_is_mac(maps: torch.Tensor) -> None:
    assert torch.equal(max_pool(maps), torch.tensor([[4.0, 8.0]]))


def test_gem_pool_p3(maps: torch.Tensor) -> None:
    # channel 0: ((1 + 8 + 27 + 64) / 4) ** (1/3) = 25 ** (1/3); channel 1: (512 / 4) ** (1/3) = 128 ** (1/3)
    expected = torch.tensor([[25.0 ** (1 / 3), 128.0 ** (1 / 3)]])
    assert torch.allclose(gem_pool(maps), expected, atol=1e-5)


def test_gem_clamps_non_positive_values() -> None:
    negative = torch.full((1, 1, 2, 2), -5.0)
    assert torch.allclose(gem_pool(negative), torch.tensor([[GEM_EPS]]), rtol=1e-3)
    assert not torch.isnan(gem_pool(torch.zeros(1, 3, 2, 2))).any()


def test_gem_p1_is_avg_for_positive_maps(maps: torch.Tensor) -> None:
    positive = maps + 1.0
    assert torch.allclose(gem_pool(positive, p=1.0), avg_pool(positive))


def test_gem_lies_between_avg_and_max() -> None:
    features = torch.rand(4, 16, 7, 7, generator=torch.Generator().manual_seed(0)) + 0.01
    gem, avg, mac = gem_pool(features), avg_pool(features), max_pool(features)
    assert (avg <= gem + 1e-6).all()
    assert (gem <= mac + 1e-6).all()
    assert (gem > avg).any() and (gem < mac).any()


def test_shapes_and_dispatch() -> None:
    features = torch.rand(3, 5, 4, 6)
    for kind in POOLINGS:
        assert pool(features, kind).shape == (3, 5)
        assert torch.equal(GlobalPool(kind)(features), pool(features, kind))


def test_unknown_pooling_and_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"^unknown pooling 'sum': choose one of avg, max, gem$"):
        pool(torch.rand(1, 2, 3, 3), "sum")
    with pytest.raises(ValueError, match=r"^expected feature maps of shape \(N, C, H, W\), got \(2, 3\)$"):
        avg_pool(torch.rand(2, 3))
