"""The `colour` descriptor model: each frame's dominant colours as an ordered palette vector.

A frame is shrunk to a 32 x 32 thumbnail (the model's preprocessing already stretches it to
64 x 64), its pixels are converted to CIE Lab (distances there follow perceived colour
differences) and clustered by faiss k-means into PALETTE_SIZE colours. Clusters closer than
MERGE_DELTA_E are merged (a solid frame is one colour, not five copies of it), the colours
are sorted by their share of the pixels, and each slot holds
sqrt(share) x [L/100, a/100, b/100, 1]: the colour weighted by how much of the frame it
covers, so the cosine of two palettes compares what dominates (night, snow, dusk).
It has no weights: its identity (weights_sha256) is the digest of DESCRIPTOR_VERSION.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional

PALETTE_SIZE = 5
SLOT = 4
DIM = PALETTE_SIZE * SLOT
THUMBNAIL = 32
INPUT_SIZE = 64
KMEANS_ITERATIONS = 20
MERGE_DELTA_E = 8.0
DESCRIPTOR_VERSION = f"sisyphus colour palette v1: lab k={PALETTE_SIZE} thumb={THUMBNAIL} merge={MERGE_DELTA_E}"
DESCRIPTOR_SHA256 = hashlib.sha256(DESCRIPTOR_VERSION.encode()).hexdigest()


def rgb_to_lab(rgb: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """sRGB in [0, 1], shape (..., 3) -> CIE Lab (D65)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)
    return lab.astype(np.float32)


def dominant_colours(lab_pixels: npt.NDArray[np.float32], k: int = PALETTE_SIZE,
                     seed: int = 0) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """(colours (m, 3) in Lab, shares (m,)) sorted by share, m <= k after merging near-equal clusters."""
    import faiss

    points = np.ascontiguousarray(lab_pixels.reshape(-1, 3), dtype=np.float32)
    distinct = np.unique(np.round(points, 1), axis=0)
    k = max(1, min(k, distinct.shape[0]))
    kmeans = faiss.Kmeans(3, k, niter=KMEANS_ITERATIONS, seed=seed, verbose=False, min_points_per_centroid=1)
    kmeans.cp.max_points_per_centroid = 1 << 20  # never subsample a thumbnail
    kmeans.train(points)
    _, assignment = kmeans.index.search(points, 1)
    counts = np.bincount(assignment[:, 0], minlength=k).astype(np.float64)
    return merge_clusters(kmeans.centroids.reshape(k, 3), counts)


def merge_clusters(centroids: npt.NDArray[np.float32],
                   counts: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Clusters closer than MERGE_DELTA_E merged, sorted by share: (colours (m, 3), shares (m,))."""
    colours: list[npt.NDArray[np.float32]] = []
    shares: list[float] = []
    for index in np.argsort(-counts, kind="stable"):
        if counts[index] == 0:
            continue
        for slot, colour in enumerate(colours):
            if float(np.linalg.norm(colour - centroids[index])) < MERGE_DELTA_E:
                total = shares[slot] + counts[index]
                colours[slot] = (colour * shares[slot] + centroids[index] * counts[index]) / total
                shares[slot] = total
                break
        else:
            colours.append(centroids[index].astype(np.float32))
            shares.append(float(counts[index]))
    order = np.argsort(-np.asarray(shares), kind="stable")
    share = np.asarray(shares)[order] / float(counts.sum())
    return np.asarray(colours, dtype=np.float32)[order], share


def batched_kmeans(points: torch.Tensor, k: int = PALETTE_SIZE,
                   iterations: int = KMEANS_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of many frames at once on the points' device (the GPU path).

    points (N, P, 3) -> centroids (N, k, 3), counts (N, k). One kernel per step for the
    whole batch: per-frame faiss calls on 1,024 points would spend their time launching.
    Centroids start at evenly spaced lightness quantiles, so the result is deterministic.
    """
    n, p, _ = points.shape
    order = torch.argsort(points[..., 0], dim=1)
    picks = torch.linspace(0, p - 1, k, device=points.device).round().long()
    centroids = torch.gather(points, 1, order[:, picks, None].expand(n, k, 3)).clone()
    for _ in range(iterations):
        assignment = torch.cdist(points, centroids).argmin(dim=2)
        one_hot = functional.one_hot(assignment, k).to(points.dtype)  # (N, P, k)
        counts = one_hot.sum(dim=1)
        sums = one_hot.transpose(1, 2) @ points
        # An empty cluster keeps its centroid (it is dropped later with a zero count).
        centroids = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], centroids)
    assignment = torch.cdist(points, centroids).argmin(dim=2)
    counts = functional.one_hot(assignment, k).sum(dim=1)
    return centroids, counts


def palette_vector(colours: npt.NDArray[np.float32], shares: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    vector = np.zeros(DIM, dtype=np.float32)
    for slot, (colour, share) in enumerate(zip(colours[:PALETTE_SIZE], shares[:PALETTE_SIZE], strict=True)):
        vector[slot * SLOT:(slot + 1) * SLOT] = np.sqrt(share) * np.array(
            [colour[0] / 100.0, colour[1] / 100.0, colour[2] / 100.0, 1.0])
    return vector


class ColourPalette(nn.Module):
    """(N, 3, H, W) float RGB in [0, 1] -> (N, DIM) palette vectors (k-means on the CPU with faiss)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        import faiss

        small = functional.adaptive_avg_pool2d(images.float(), THUMBNAIL).clamp(0.0, 1.0)
        if images.is_cuda:
            return self._on_device(small)
        pixels = small.permute(0, 2, 3, 1).reshape(images.shape[0], -1, 3).cpu().numpy()
        # A thumbnail's 1,024 points are far too few for OpenMP: one thread is ~20x faster here.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            vectors = [palette_vector(*dominant_colours(rgb_to_lab(frame))) for frame in pixels]
        finally:
            faiss.omp_set_num_threads(threads)
        return torch.from_numpy(np.stack(vectors)).to(images.device)

    @staticmethod
    def _on_device(small: torch.Tensor) -> torch.Tensor:
        """The GPU path: Lab conversion on the host (cheap), k-means of the whole batch on the device."""
        pixels = small.permute(0, 2, 3, 1).reshape(small.shape[0], -1, 3).cpu().numpy()
        lab = torch.from_numpy(rgb_to_lab(pixels)).to(small.device)
        centroids, counts = batched_kmeans(lab)
        vectors = [palette_vector(*merge_clusters(c.cpu().numpy(), n.cpu().numpy().astype(np.float64)))
                   for c, n in zip(centroids, counts, strict=True)]
        return torch.from_numpy(np.stack(vectors)).to(small.device)
