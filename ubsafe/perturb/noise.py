"""Noise: ImageNet-C's gaussian, shot, impulse and speckle noise, and UnsafeBench's GN attack.

Definitions follow hendrycks/robustness `ImageNet-C/imagenet_c/corruptions.py`; the draws are
per-sample tensors from the sample's own generator instead of NumPy's global state.
"""

from __future__ import annotations

import torch

from ubsafe.perturb._ops import l2_norm
from ubsafe.perturb._poisson import shot_counts
from ubsafe.perturb.base import Draws, Normalization, Perturbation

GAUSSIAN_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_RATE = (60, 25, 12, 5, 3)
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
SPECKLE_SIGMA = (0.15, 0.2, 0.35, 0.45, 0.6)
#: UnsafeBench's `--eps 0.01`: the L2 norm of foolbox's L2AdditiveGaussianNoiseAttack noise.
PAPER_EPSILON = 0.01


def _normal(generator: torch.Generator, size: int) -> torch.Tensor:
    return torch.randn(3, size, size, generator=generator)


class GaussianNoise(Perturbation):
    """x + N(0, sigma^2), clipped."""

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        return {"normal": _normal(generator, size)}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        return images + draws["normal"] * GAUSSIAN_SIGMA[severity - 1]


class ShotNoise(Perturbation):
    """Poisson(x * lam) / lam, clipped."""

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        shape = (3, size, size)
        return {
            "u1": torch.rand(shape, generator=generator, dtype=torch.float64),
            "u2": torch.rand(shape, generator=generator, dtype=torch.float64),
        }

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        rate = float(SHOT_RATE[severity - 1])
        counts = shot_counts(images, draws["u1"], draws["u2"], rate)
        return (counts / rate).to(images.dtype)


class ImpulseNoise(Perturbation):
    """scikit-image's salt & pepper: each value flips with probability `amount`, half of the
    flips to 1 (salt), half to 0 (pepper). One uniform per value decides both: u < amount / 2
    is salt, amount / 2 <= u < amount pepper (the same law as skimage's two draws)."""

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        return {"uniform": torch.rand(3, size, size, generator=generator)}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        amount = IMPULSE_AMOUNT[severity - 1]
        uniform = draws["uniform"]
        out = torch.where(uniform < amount / 2, 1.0, images)
        return torch.where((uniform >= amount / 2) & (uniform < amount), 0.0, out)


class SpeckleNoise(Perturbation):
    """x + x * N(0, sigma^2), clipped."""

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        return {"normal": _normal(generator, size)}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        return images + images * (draws["normal"] * SPECKLE_SIGMA[severity - 1])


class PaperGaussianNoise(Perturbation):
    """UnsafeBench's GN: foolbox `L2AdditiveGaussianNoiseAttack(epsilons=0.01)`.

    Gaussian noise rescaled to an L2 norm of exactly 0.01 over the whole image in the encoder's
    normalised space, i.e. x + 0.01 * std * z / ||z|| in pixels. foolbox then clips to the model's
    bounds ((-3, 3) normalised in UnsafeBench); here the result is clipped to [0,1] pixels, which
    differs only where a pixel sits within about 0.003 of 0 or 1. One level: severity 1 only.
    """

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        return {"normal": _normal(generator, size)}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        if normalization is None:
            raise ValueError(f"{self.name} needs normalization=(mean, std)")
        normal = draws["normal"]
        direction = normal / l2_norm(normal)
        std = torch.tensor(normalization[1], dtype=images.dtype, device=images.device)
        return images + direction * (std.view(1, 3, 1, 1) * PAPER_EPSILON)
