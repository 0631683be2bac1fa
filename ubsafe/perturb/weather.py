"""Weather: ImageNet-C's snow, frost and fog, and the extra spatter.

Definitions follow hendrycks/robustness `ImageNet-C/imagenet_c/corruptions.py`. Where ImageNet-C
round-trips an intermediate layer through 8 bits (snow's layer around the ImageMagick blur), the
same rounding is kept; final images stay float.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ubsafe.perturb import _water
from ubsafe.perturb._filters import gaussian_filter
from ubsafe.perturb._frost import frost_source_id, frost_source_setting, frost_textures
from ubsafe.perturb._motion import motion_blur
from ubsafe.perturb._ops import rgb_to_gray
from ubsafe.perturb._plasma import next_power_of_two, plasma_fractal, plasma_uniform_count
from ubsafe.perturb._resample import resample, zoom_taps
from ubsafe.perturb.base import Draws, Normalization, Perturbation

#: (loc, scale, zoom, threshold, blur radius, blur sigma, image weight)
SNOW = (
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
#: (image weight, frost weight)
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
#: (strength, wibble decay)
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
#: (loc, scale, sigma, threshold, intensity or mud blur, mud?)
SPATTER = (
    (0.65, 0.3, 4, 0.69, 0.6, 0),
    (0.65, 0.3, 3, 0.68, 0.6, 0),
    (0.65, 0.3, 2, 0.68, 0.5, 0),
    (0.65, 0.3, 1, 0.65, 1.5, 1),
    (0.67, 0.4, 1, 0.65, 1.5, 1),
)
WATER_RGB = (175 / 255.0, 238 / 255.0, 238 / 255.0)  # pale turquoise
MUD_RGB = (63 / 255.0, 42 / 255.0, 20 / 255.0)  # mud brown
_TRUNCATE = 4.0


def _rgb(color: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(color, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


class Snow(Perturbation):
    """A Gaussian layer, zoomed, thresholded, 8-bit, motion-blurred (ImageMagick) at an angle in
    [-135, -45) degrees, rounded to 8 bits; added twice (as is and rotated 180 degrees) to an image
    pulled towards max(x, 1.5 gray + 0.5)."""

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        normal = torch.randn(1, size, size, generator=generator, dtype=torch.float64)
        angle = torch.rand((), generator=generator, dtype=torch.float64) * 90.0 - 135.0
        return {"normal": normal, "angle": angle}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        loc, scale, zoom, threshold, radius, sigma, weight = SNOW[severity - 1]
        size = images.shape[-1]
        layer = loc + draws["normal"] * scale  # float64 until the 8-bit rounding, as ImageNet-C
        taps = zoom_taps(size, float(zoom))
        layer = resample(layer, taps, taps)
        layer = torch.where(layer < threshold, 0.0, layer).clamp(0.0, 1.0)
        layer = torch.floor(layer * 255.0) / 255.0  # ImageNet-C's uint8 PNG before ImageMagick
        layer = motion_blur(layer, draws["angle"].cpu(), radius, sigma)
        layer = torch.floor(layer * 255.0 + 0.5) / 255.0  # ImageMagick's 8-bit output
        layer = layer.to(images.dtype)
        lifted = torch.maximum(images, rgb_to_gray(images) * 1.5 + 0.5)
        pulled = images * weight + lifted * (1 - weight)
        return pulled + layer + torch.flip(layer, dims=(-2, -1))


class Frost(Perturbation):
    """c0 * x + c1 * a random crop of one of five frost textures (see `_frost`)."""

    def fingerprint(self, device: str = "cpu") -> str:
        return f"{super().fingerprint(device)}:{frost_source_id(frost_source_setting())}"

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        textures = frost_textures(size, frost_source_setting()).images
        choice = int(torch.randint(len(textures), (), generator=generator))
        height, width = textures[choice].shape[:2]
        top = int(torch.randint(height - size, (), generator=generator))
        left = int(torch.randint(width - size, (), generator=generator))
        return {"crop": torch.tensor([choice, top, left])}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        image_weight, frost_weight = FROST[severity - 1]
        size = images.shape[-1]
        textures = frost_textures(size, frost_source_setting()).images
        crops = np.stack(
            [
                textures[choice][top : top + size, left : left + size].transpose(2, 0, 1)
                for choice, top, left in draws["crop"].cpu().tolist()
            ]
        )
        frost = torch.from_numpy(crops).to(images.device)
        return images * image_weight + frost * frost_weight


class Fog(Perturbation):
    """x + c * plasma fractal (side: next power of two >= S, cropped), rescaled by max(x)."""

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        count = plasma_uniform_count(next_power_of_two(size))
        return {"uniform": torch.rand(count, generator=generator, dtype=torch.float64)}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        strength, decay = FOG[severity - 1]
        size = images.shape[-1]
        plasma = plasma_fractal(draws["uniform"], next_power_of_two(size), decay)
        fog = plasma[:, None, :size, :size].to(images.dtype)
        peak = images.amax(dim=(1, 2, 3), keepdim=True)
        return (images + fog * strength) * peak / (peak + strength)


class Spatter(Perturbation):
    """A blurred, thresholded Gaussian 'liquid' layer: water drops at severities 1-3 (the mask:
    Canny edges, distance transform, histogram equalisation; see `water_mask`), mud at 4-5."""

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        return {"normal": torch.randn(1, size, size, generator=generator, dtype=torch.float64)}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        loc, scale, sigma, threshold, amount, mud = SPATTER[severity - 1]
        liquid = loc + draws["normal"] * scale  # float64, as ImageNet-C, before 8-bit rounding
        liquid = gaussian_filter(liquid, float(sigma), _TRUNCATE, "nearest")
        liquid = torch.where(liquid < threshold, 0.0, liquid)
        if not mud:
            mask = water_mask(liquid, amount).to(images.dtype)
            return images + mask * _rgb(WATER_RGB, images)
        mask = (liquid > threshold).to(torch.float64)
        mask = gaussian_filter(mask, float(amount), _TRUNCATE, "nearest")
        mask = torch.where(mask < 0.8, 0.0, mask).to(images.dtype)
        return images * (1 - mask) + _rgb(MUD_RGB, images) * mask


def water_mask(liquid: torch.Tensor, intensity: float) -> torch.Tensor:
    """ImageNet-C's water-drop mask (B, 1, S, S), float32 on the liquid's device.

    On the CPU OpenCV builds it image by image, the fastest there; on an accelerator, or without
    OpenCV's IPP build, batched tensor ops build the very same bytes (`_water.py`), with no step
    per image.
    """
    cv2 = None if liquid.device.type != "cpu" else _opencv()
    if cv2 is None:
        return _water.water_mask(liquid, intensity)
    masks = []
    for layer in liquid[:, 0].numpy():
        layer_u8 = np.clip(layer * 255.0, 0, 255).astype(np.uint8)
        edges = 255 - cv2.Canny(layer_u8, 50, 150)
        dist = cv2.distanceTransform(edges, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.filter2D(dist, cv2.CV_8U, emboss)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        mask = layer_u8.astype(np.float32) * dist
        peak = float(mask.max())
        masks.append(mask / peak * intensity if peak > 0 else mask)
    return torch.from_numpy(np.stack(masks)[:, None])


def _opencv() -> Any:
    """OpenCV when it computes what the tensor path computes (its IPP build: float32 chamfer
    weights), else None: both paths must give the same bytes for the variant's identity."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return cv2 if cv2.ipp.useIPP() else None
