"""Batched embedding: prepared uint8 frames in, L2-normalised float32 vectors out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional

from sisyphus_db.devices import resolve_torch_device
from sisyphus_db.embed.backbones import EmbeddingNet, build_network
from sisyphus_db.embed.models import DEFAULT_MODEL, ModelSpec, get_model_spec
from sisyphus_db.embed.preprocess import prepare_batch
from sisyphus_db.errors import ModelError

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32


def _autocast_dtype() -> torch.dtype:
    """float16 for CUDA autocast: it keeps 3 more mantissa bits than bfloat16, which
    matters for distances between near-duplicate frames; the conv nets here do not
    overflow it, and pooling runs in float32 anyway."""
    return torch.float16


class Embedder:
    """A loaded model on one device. Build it with :func:`load_embedder`."""

    def __init__(self, spec: ModelSpec, device: str, network: EmbeddingNet) -> None:
        self.spec = spec
        self.device = device
        self.network = network
        self.batch_size = DEFAULT_BATCH_SIZE
        # One forward at a time: a shared cached model called from several threads would
        # only contend for the same cores (or GPU) anyway.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Embedder({self.spec.name!r}, dim={self.spec.dim}, device={self.device!r})"

    @property
    def dim(self) -> int:
        return self.spec.dim

    def _check_batch(self, batch: np.ndarray) -> None:
        size = self.spec.input_size
        if (
            not isinstance(batch, np.ndarray)
            or batch.dtype != np.uint8
            or batch.ndim != 4
            or batch.shape[1:] != (size, size, 3)
        ):
            dtype = getattr(batch, "dtype", type(batch).__name__)
            shape = tuple(getattr(batch, "shape", ()))
            raise ModelError(
                f"{self.spec.name} expects a uint8 batch of shape (N, {size}, {size}, 3), got {dtype} {shape}"
            )

    @torch.inference_mode()
    def forward_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) tensor already on the device -> L2-normalised float32 (N, dim) on the device."""
        if self.device.startswith("cuda"):
            with torch.autocast(device_type="cuda", dtype=_autocast_dtype()):
                vectors = self.network(batch)
        else:
            vectors = self.network(batch)
        return functional.normalize(vectors.float(), p=2.0, dim=1)

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Embed an N x size x size x 3 uint8 batch from prepare_image: (N, dim) float32, unit L2 norm."""
        self._check_batch(batch)
        if batch.shape[0] == 0:
            return np.empty((0, self.spec.dim), dtype=np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.startswith("cuda"):
            # Copy uint8, a quarter of the bytes of float32, and convert on the GPU.
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        with self._lock:
            vectors = self.forward_tensor(tensor)
        result = vectors.cpu().numpy().astype(np.float32, copy=False)
        if result.shape[1] != self.spec.dim:
            raise ModelError(f"{self.spec.name} returned {result.shape[1]}-d vectors, expected {self.spec.dim}")
        return result

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Prepare HxWx3 uint8 images of any size and embed them, batch_size at a time: (N, dim) float32."""
        step = batch_size or self.batch_size
        if step < 1:
            raise ModelError(f"batch size must be at least 1, got {step}")
        if len(images) == 0:
            return np.empty((0, self.spec.dim), dtype=np.float32)
        parts = [
            self.embed_prepared(prepare_batch(images[start : start + step], self.spec.preprocessing))
            for start in range(0, len(images), step)
        ]
        return np.concatenate(parts, axis=0)


_cache: dict[tuple[str, str, str], Embedder] = {}
_cache_lock = threading.Lock()


def load_embedder(name: str = DEFAULT_MODEL, *, device: str = "auto") -> Embedder:
    """The embedder for a model name on auto|cpu|cuda, loaded once per (model, device) in this process."""
    resolved_device = resolve_torch_device(device)
    spec = get_model_spec(name)
    # The weights digest is in the key so a TorchScript file replaced on disk is reloaded.
    key = (spec.name, spec.weights_sha256, resolved_device)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        embedder = Embedder(spec, resolved_device, build_network(spec, resolved_device))
        _cache[key] = embedder
        return embedder


def clear_embedder_cache() -> None:
    """Forget the loaded models (tests; freeing GPU memory)."""
    with _cache_lock:
        _cache.clear()


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forward_throughput(embedder: Embedder, batch_size: int = 32, batches: int = 5) -> float:
    """Images per second of the model alone (normalise, trunk, pool, L2) on random prepared input.

    The input is made on the device up front, so decoding, resizing and the host-to-device
    copy are left out: the ceiling that end-to-end ingest speed is compared against.
    One warm-up batch (cuDNN autotuning, lazy allocations) is not timed.
    """
    if batch_size < 1 or batches < 1:
        raise ModelError(f"batch_size and batches must be at least 1, got {batch_size} and {batches}")
    size = embedder.spec.input_size
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8, generator=generator)
    batch = batch.to(embedder.device)
    with embedder._lock:
        embedder.forward_tensor(batch)
        _synchronize(embedder.device)
        started = time.perf_counter()
        for _ in range(batches):
            embedder.forward_tensor(batch)
        _synchronize(embedder.device)
        elapsed = time.perf_counter() - started
    rate = batch_size * batches / elapsed
    logger.info("%s on %s: %.1f images/s (model only, batch %d)", embedder.spec.name, embedder.device, rate, batch_size)
    return rate
