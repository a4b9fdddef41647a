"""Visual vocabulary: local descriptors of feature maps, PCA-reduced, clustered by faiss k-means.

Descriptors are the C-d vectors at each position of the last feature map, L2-normalised,
projected to PCA_DIM dimensions (fitted on the sample), and L2-normalised again; the
words are spherical k-means centroids. The file (.npz: mean, components, centroids) is
registered in `bow_vocabularies` with its sha256.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sisyphus_db.errors import AnnIndexError, InputError

PCA_DIM = 128
MIN_POINTS_PER_WORD = 39  # faiss's own floor for k-means: fewer points per centroid trains badly
MAX_DEFAULT_WORDS = 25_000  # what the BLCF paper found best on Oxford/Paris
DESCRIPTORS_PER_WORD = 40  # the default vocabulary: as many words as the sample trains (BLCF: more is better)
MAX_SAMPLE_DESCRIPTORS = 400_000
LAYERS = ("last",)


def check_layer(layer: str) -> None:
    if layer not in LAYERS:
        raise InputError(f"unknown --layer {layer!r}: the local features come from {', '.join(LAYERS)} "
                         "(the model's last convolutional feature map)")


def default_words(descriptors: int) -> int:
    """A vocabulary size the descriptors can train: 1 word per 40 descriptors, at most 25k, never more than n/39."""
    return max(1, min(MAX_DEFAULT_WORDS, descriptors // DESCRIPTORS_PER_WORD, descriptors // MIN_POINTS_PER_WORD))


def check_words(words: int, descriptors: int) -> None:
    if words < 1:
        raise InputError(f"--words must be at least 1, got {words}")
    if words * MIN_POINTS_PER_WORD > descriptors:
        raise InputError(f"--words {words} needs at least {words * MIN_POINTS_PER_WORD} local descriptors "
                         f"({MIN_POINTS_PER_WORD} per word), the sample has {descriptors}: use at most "
                         f"{max(1, descriptors // MIN_POINTS_PER_WORD)} words or more frames")


def map_descriptors(fmap: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(C, h, w) -> (h*w, C) row-major positions, L2-normalised."""
    c = fmap.shape[0]
    rows = fmap.reshape(c, -1).T
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Vocabulary:
    mean: npt.NDArray[np.float32]
    components: npt.NDArray[np.float32]  # (PCA_DIM, C)
    centroids: npt.NDArray[np.float32]   # (words, PCA_DIM)

    @property
    def words(self) -> int:
        return int(self.centroids.shape[0])

    def project(self, descriptors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        reduced = (descriptors - self.mean) @ self.components.T
        return (reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def assign(self, descriptors: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
        """The nearest word of each (already L2-normalised) C-d descriptor."""
        import faiss

        index = faiss.IndexFlatIP(self.centroids.shape[1])
        index.add(self.centroids)
        _, nearest = index.search(self.project(descriptors), 1)
        return nearest[:, 0].astype(np.int32)


def train_vocabulary(descriptors: npt.NDArray[np.float32], words: int, *, device: str = "cpu",
                     seed: int = 0, niter: int = 20) -> Vocabulary:
    """PCA (numpy SVD) then spherical k-means (faiss, on the GPU when device is cuda)."""
    import faiss

    check_words(words, descriptors.shape[0])
    mean = descriptors.mean(axis=0).astype(np.float32)
    centred = descriptors - mean
    dim = min(PCA_DIM, descriptors.shape[1], descriptors.shape[0])
    _, _, vt = np.linalg.svd(centred[: min(len(centred), 50_000)], full_matrices=False)
    components = vt[:dim].astype(np.float32)
    reduced = centred @ components.T
    reduced = (reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    kmeans = faiss.Kmeans(dim, words, niter=niter, seed=seed, spherical=True, gpu=device == "cuda",
                          verbose=False, max_points_per_centroid=256)
    kmeans.train(np.ascontiguousarray(reduced))
    return Vocabulary(mean, components, np.ascontiguousarray(kmeans.centroids, dtype=np.float32))


def write_vocabulary(vocabulary: Vocabulary, path: Path) -> str:
    """Write atomically; returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        np.savez(out, mean=vocabulary.mean, components=vocabulary.components, centroids=vocabulary.centroids)
    os.replace(temporary, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_vocabulary(path: Path, sha256: str) -> Vocabulary:
    try:
        data = path.read_bytes()
    except OSError:
        raise AnnIndexError(f"vocabulary file {path} is missing: rebuild with `sisyphus bow build --rebuild`") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise AnnIndexError(f"vocabulary file {path} does not match its registry checksum: "
                            "rebuild with `sisyphus bow build --rebuild`")
    with np.load(path) as arrays:
        return Vocabulary(arrays["mean"], arrays["components"], arrays["centroids"])
