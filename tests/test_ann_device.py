"""faiss device resolution; the GPU path runs only where faiss sees a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from sisyphus_db.ann import build_index, clustered_vectors, search, to_cpu, to_gpu
from sisyphus_db.ann.device import faiss_num_gpus, is_gpu_index, resolve_faiss_device
from sisyphus_db.errors import DeviceError

HAS_GPU = faiss_num_gpus() > 0


def test_cpu_always_resolves() -> None:
    assert resolve_faiss_device("cpu") == "cpu"
    assert resolve_faiss_device("auto") in ("cpu", "cuda")


def test_unknown_device_is_refused() -> None:
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_faiss_device("tpu")


@pytest.mark.skipif(HAS_GPU, reason="this faiss has GPU support")
def test_cuda_without_gpu_faiss_raises() -> None:
    with pytest.raises(DeviceError) as exc:
        resolve_faiss_device("cuda")
    assert str(exc.value) == (
        "--device cuda was asked for but this faiss has no GPU support "
        "(install sisyphus-db[gpu] on a CUDA machine)"
    )
    assert resolve_faiss_device("auto") == "cpu"


@pytest.mark.skipif(HAS_GPU, reason="this faiss has GPU support")
def test_build_on_cuda_without_gpu_raises() -> None:
    x = clustered_vectors(100, 16)
    with pytest.raises(DeviceError):
        build_index(x, np.arange(100), factory="Flat", device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="faiss has no GPU support here")
def test_gpu_build_matches_cpu_ids_and_returns_cpu_index() -> None:
    x = clustered_vectors(20_000, 64, seed=3)
    ids = 10_000 + 7 * np.arange(x.shape[0])
    index = build_index(x, ids, factory="IVF64,PQ16", device="cuda")
    assert not is_gpu_index(index)
    assert index.ntotal == x.shape[0]
    gpu = to_gpu(index)
    assert is_gpu_index(gpu)
    _, found = search(gpu, x[:50], 10, nprobe=16)
    assert np.isin(found[found >= 0], ids).all()
    assert (found[:, 0] == ids[:50]).mean() > 0.8
    assert not is_gpu_index(to_cpu(gpu))
