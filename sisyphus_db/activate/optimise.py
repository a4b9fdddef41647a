"""The activation loop: a learned additive change of the pixels that pulls the feature to its target.

For each image x (values in [0, 1]) a delta of the same shape is learned with Adam; the
change applied is `heat * delta`, the perceptual heat map putting it where texture hides
it. The loss, per image, is

    ||f(x + heat * delta) - target||^2                       (pull to the quantized target)
  + margin_weight * relu(margin - (||f - c2||^2 - ||f - c1||^2))   (away from the IVF cell border)
  + reg_weight * mean((heat * delta)^2) / mse_bound            (the smallest change that does it)

where f is the model's L2-normalised feature computed exactly as the ingest computes it
(resize to the model's input, normalise, trunk, pooling) but differentiably, c1/c2 the
assigned and second-nearest coarse centroids. After every step the change is projected
back onto the PSNR ball: scaled down when its mean squared error exceeds the bound. Each
image keeps the change of its lowest loss (the unchanged image included).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional

from sisyphus_db.activate.heatmap import perceptual_heatmap
from sisyphus_db.activate.resample import (
    center_crop_resize,
    pil_bilinear_resize,
    round_to_uint8_levels,
)
from sisyphus_db.activate.target import Targets
from sisyphus_db.embed.embedder import Embedder
from sisyphus_db.errors import InputError, ModelError

logger = logging.getLogger(__name__)

MIN_PSNR = 20.0
MAX_PSNR = 80.0
# Project a little inside the bound: rounding to uint8 and encoding add their own error.
PROJECTION_SAFETY = 0.95


@dataclass(frozen=True)
class ActivationSettings:
    psnr: float = 43.0
    iterations: int = 10
    lr: float = 0.005  # Adam step, in [0, 1] pixel units (0.005 = 1.3 grey levels)
    margin: float = 0.05
    margin_weight: float = 1.0
    reg_weight: float = 0.01

    def check(self) -> None:
        if not math.isfinite(self.psnr) or not MIN_PSNR <= self.psnr <= MAX_PSNR:
            raise InputError(f"--psnr must be within {MIN_PSNR:g}-{MAX_PSNR:g} dB, got {self.psnr:g}")
        if self.iterations < 1:
            raise InputError(f"--iterations must be at least 1, got {self.iterations}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise InputError(f"--lr must be a positive number, got {self.lr:g}")

    @property
    def mse_bound(self) -> float:
        """The largest mean squared error, in [0, 1] units, that keeps PSNR >= self.psnr."""
        return float(10.0 ** (-self.psnr / 10.0))


class FeatureFunction:
    """The embedder's network as a differentiable map from [0, 1] RGB images of any size to unit features."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.network = embedder.network
        self.device = embedder.device
        self.preprocessing = embedder.spec.preprocessing
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)  # gradients are wanted for the pixels only

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) -> (1, 3, size, size), exactly as `prepare_image` does it with Pillow."""
        size = int(self.preprocessing["size"])
        # The stored file holds uint8 values: the model never sees anything between two levels.
        image = round_to_uint8_levels(image)
        if self.preprocessing.get("resize", "stretch") == "center_crop":
            return center_crop_resize(image, size)
        return pil_bilinear_resize(image, size, size)

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        batch = torch.cat([self.prepare(image) for image in images])
        normalised = (batch - self.network.mean) / self.network.std
        maps = self.network.trunk(normalised)
        pooled = self.network.pool(maps.float())
        return functional.normalize(pooled, p=2.0, dim=1)

    def check_gradients(self) -> None:
        """Fail with one line when the model cannot pass a gradient back to its input."""
        size = int(self.preprocessing["size"])
        probe = torch.rand(1, 3, size, size, device=self.device, requires_grad=True)
        name = self.embedder.spec.name
        reason = "its output does not require grad"
        try:
            with torch.enable_grad():
                output = self([probe])
                if output.requires_grad:
                    output.sum().backward()
                    reason = "no gradient reached the input"
        except RuntimeError as exc:
            reason = (str(exc).strip().splitlines() or ["backward failed"])[0]
        if probe.grad is None or not bool(torch.isfinite(probe.grad).all()) or not bool(probe.grad.abs().sum() > 0):
            raise ModelError(f"model {name} gives no gradients to its input ({reason}): activation needs a "
                             "differentiable model, e.g. a TorchScript file saved without freezing or no_grad")


def model_input(colour: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """(1, C, H, W) colour in [0, 1] -> the RGB picture the model sees (grey repeated, alpha over white)."""
    rgb = colour.expand(-1, 3, -1, -1) if colour.shape[1] == 1 else colour
    return rgb if alpha is None else rgb * alpha + (1.0 - alpha)


def _project(change: torch.Tensor, bound: float) -> float:
    """Scale factor that brings the change's mean squared error within bound (1.0 when it already is)."""
    mse = float(change.pow(2).mean())
    return 1.0 if mse <= bound else math.sqrt(bound / mse)


def optimise(features: FeatureFunction, colours: Sequence[torch.Tensor], alphas: Sequence[torch.Tensor | None],
             targets: Targets, settings: ActivationSettings) -> list[torch.Tensor]:
    """Learn one change per image; returns the changes (1, C, H, W), in [0, 1] units, within the PSNR bound.

    Each image keeps the change of its lowest loss over the iterations (the unchanged image
    included): on pictures whose features react chaotically to a grey level or two (smooth
    generated ones), a step can overshoot, and the best state is the one to write.
    """
    device = features.device
    heats = [perceptual_heatmap(colour, alpha) for colour, alpha in zip(colours, alphas, strict=True)]
    deltas = [torch.zeros_like(colour, requires_grad=True) for colour in colours]
    optimiser = torch.optim.Adam(deltas, lr=settings.lr)
    target = torch.as_tensor(targets.vectors, device=device)
    first = None if targets.first is None else torch.as_tensor(targets.first, device=device)
    second = None if targets.second is None else torch.as_tensor(targets.second, device=device)
    bound = settings.mse_bound * PROJECTION_SAFETY

    def changes() -> list[torch.Tensor]:
        return [(colour + heat * delta).clamp(0.0, 1.0) - colour
                for colour, heat, delta in zip(colours, heats, deltas, strict=True)]

    def losses(changed: list[torch.Tensor]) -> torch.Tensor:
        feature = features([model_input(colour + change, alpha)
                            for colour, change, alpha in zip(colours, changed, alphas, strict=True)])
        loss = (feature - target).pow(2).sum(dim=1)
        if first is not None and second is not None:
            gap = (feature - second).pow(2).sum(dim=1) - (feature - first).pow(2).sum(dim=1)
            loss = loss + settings.margin_weight * functional.relu(settings.margin - gap)
        regulariser = torch.stack([change.pow(2).mean() for change in changed]) / settings.mse_bound
        return loss + settings.reg_weight * regulariser

    best_loss = torch.full((len(colours),), math.inf, device=device)
    best = [torch.zeros_like(colour) for colour in colours]

    def keep_best(loss: torch.Tensor, changed: list[torch.Tensor]) -> None:
        for row, change in enumerate(changed):
            if float(loss[row]) < float(best_loss[row]):
                best_loss[row] = loss[row].detach()
                best[row] = change.detach().clone()

    for step in range(settings.iterations):
        optimiser.zero_grad(set_to_none=True)
        with torch.enable_grad():
            changed = changes()
            loss = losses(changed)
            loss.sum().backward()
        keep_best(loss.detach(), changed)
        optimiser.step()
        with torch.no_grad():
            for colour, heat, delta in zip(colours, heats, deltas, strict=True):
                delta.mul_(_project((colour + heat * delta).clamp(0.0, 1.0) - colour, bound))
        logger.debug("activation step %d: mean loss %.5f", step + 1, float(loss.detach().mean()))
    with torch.no_grad():
        changed = changes()
        keep_best(losses(changed), changed)
    return best
