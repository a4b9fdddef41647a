"""The embedder with real weights: shapes, unit norms, invariance, devices, resnet50."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from sisyphus_db.embed import Embedder, forward_throughput, load_embedder
from sisyphus_db.embed._torchvision import import_torchvision
from sisyphus_db.errors import DeviceError, ModelError


def natural_image(seed: int, height: int = 360, width: int = 540) -> np.ndarray:
    """A structured stand-in for a photo: a colour gradient, blurred random shapes, grain."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = np.cos(angle) * cols / width + np.sin(angle) * rows / height
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    base = start * (1 - ramp[..., None]) + end * ramp[..., None]
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 14))):
        x0, y0 = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        w, h = rng.uniform(0.05, 0.4) * width, rng.uniform(0.05, 0.4) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif shape == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            corners = [(x0 + rng.uniform(0, w), y0 + rng.uniform(0, h)) for _ in range(int(rng.integers(3, 6)))]
            draw.polygon(corners, fill=colour)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5))).astype(np.int16)
    pixels += rng.integers(-6, 7, pixels.shape).astype(np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def views_of(image: np.ndarray) -> list[np.ndarray]:
    """Two overlapping crops, a small resize and a horizontal flip."""
    height, width = image.shape[:2]
    return [
        image[: int(height * 0.9), : int(width * 0.9)],
        image[int(height * 0.1) :, int(width * 0.1) :],
        np.asarray(Image.fromarray(image).resize((int(width * 0.75), int(height * 0.72)))),
        np.ascontiguousarray(image[:, ::-1]),
    ]


@pytest.fixture(scope="module")
def lite() -> Embedder:
    return load_embedder("efficientnet-lite0", device="cpu")


def test_dims_norms_and_dtype(lite: Embedder) -> None:
    assert lite.device == "cpu" and lite.spec.dim == 1280 and not lite.network.training
    images = [natural_image(seed, 100 + seed * 30, 150) for seed in range(3)]
    vectors = lite.embed_images(images, batch_size=2)
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert lite.embed_images([]).shape == (0, 1280)


def test_batches_agree(lite: Embedder) -> None:
    images = [natural_image(seed, 120, 160) for seed in range(2)]
    together = lite.embed_images(images)
    one_by_one = np.concatenate([lite.embed_images([image]) for image in images])
    assert np.allclose(together, one_by_one, atol=1e-4)


def test_cached_per_name_and_device(lite: Embedder) -> None:
    assert load_embedder("efficientnet-lite0@avg", device="cpu") is lite
    assert load_embedder("efficientnet-lite0@gem", device="cpu") is not lite


@pytest.mark.slow
def test_views_of_one_image_are_closer_than_other_images(lite: Embedder) -> None:
    others = lite.embed_images([natural_image(seed) for seed in range(10, 16)])
    for seed in (1, 2):
        query = natural_image(seed)
        original = lite.embed_images([query])[0]
        views = lite.embed_images(views_of(query))
        nearest_other = float((others @ original).max())
        # Measured on seeds 1-6: views >= 0.90 to their original, other images <= 0.79.
        assert float((views @ original).min()) > nearest_other + 0.1
        # The two crops share 80 % x 80 % of the frame and no other image comes as close.
        assert float(views[0] @ views[1]) > nearest_other + 0.03
        assert float((views @ others.T).max()) < float((views @ original).min())


def test_wrong_prepared_batch(lite: Embedder) -> None:
    with pytest.raises(ModelError) as info:
        lite.embed_prepared(np.zeros((2, 100, 100, 3), np.uint8))
    assert (
        str(info.value)
        == "efficientnet-lite0 expects a uint8 batch of shape (N, 224, 224, 3), got uint8 (2, 100, 100, 3)"
    )


def test_forward_throughput(lite: Embedder) -> None:
    assert forward_throughput(lite, batch_size=2, batches=1) > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_gpu_is_a_device_error() -> None:
    with pytest.raises(DeviceError) as info:
        load_embedder("efficientnet-lite0", device="cuda")
    assert str(info.value) == "--device cuda was asked for but torch sees no CUDA GPU"


def test_import_torchvision_is_idempotent() -> None:
    first = import_torchvision()
    assert import_torchvision() is first
    assert hasattr(first.models, "resnet50")


@pytest.mark.slow
def test_resnet50_from_a_local_state_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torchvision = import_torchvision()
    torch.manual_seed(0)
    weights = tmp_path / "resnet50-random.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    monkeypatch.setenv("SISYPHUS_RESNET50_WEIGHTS", str(weights))
    embedder = load_embedder("resnet50", device="cpu")
    assert (embedder.spec.name, embedder.spec.dim, embedder.spec.pooling) == ("resnet50", 2048, "max")
    vectors = embedder.embed_images([natural_image(3, 120, 200), natural_image(4, 90, 90)])
    assert vectors.shape == (2, 2048)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors >= 0).all()  # MAC of post-ReLU maps


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu() -> None:
    gpu = load_embedder("efficientnet-lite0", device="cuda")
    cpu = load_embedder("efficientnet-lite0", device="cpu")
    images = [natural_image(seed) for seed in range(4)]
    on_gpu, on_cpu = gpu.embed_images(images), cpu.embed_images(images)
    assert gpu.device == "cuda" and on_gpu.dtype == np.float32
    assert np.allclose(np.linalg.norm(on_gpu, axis=1), 1.0, atol=1e-3)
    # float16 autocast on the GPU against float32 on the CPU.
    assert (np.sum(on_gpu * on_cpu, axis=1) > 0.99).all()
    assert forward_throughput(gpu, batch_size=32, batches=3) > 0
