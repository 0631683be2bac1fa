"""Blur: ImageNet-C's defocus, glass, motion and zoom blur, and the extra gaussian blur.

Definitions follow hendrycks/robustness `ImageNet-C/imagenet_c/corruptions.py` (skimage's
`gaussian` = SciPy's Gaussian with truncate 4 and 'nearest' borders; OpenCV's `filter2D` with
BORDER_REFLECT_101 borders; SciPy's `zoom(order=1)`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ubsafe.perturb._filters import fft_filter2d, filter_matrix, gaussian_filter
from ubsafe.perturb._motion import motion_blur
from ubsafe.perturb._resample import resample_transposed, transpose, zoom_taps
from ubsafe.perturb.base import Draws, Normalization, Perturbation

GAUSSIAN_SIGMA = (1, 2, 3, 4, 6)
#: (sigma, max_delta, iterations)
GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
#: (radius, alias_blur)
DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
#: (radius, sigma)
MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
ZOOMS = (
    np.arange(1, 1.11, 0.01),
    np.arange(1, 1.16, 0.01),
    np.arange(1, 1.21, 0.02),
    np.arange(1, 1.26, 0.02),
    np.arange(1, 1.31, 0.03),
)
_TRUNCATE = 4.0  # skimage.filters.gaussian's default


class GaussianBlur(Perturbation):
    """skimage `gaussian(x, sigma, channel_axis=-1)`: per channel, 'nearest' borders."""

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        return gaussian_filter(images, float(GAUSSIAN_SIGMA[severity - 1]), _TRUNCATE, "nearest")


@functools.lru_cache(maxsize=8)
def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """ImageNet-C's anti-aliased disk: a normalised binary disk on a grid of half-width
    max(8, radius), blurred by OpenCV's GaussianBlur (3x3, or 5x5 above radius 8)."""
    half = 8 if radius <= 8 else radius
    ksize = 3 if radius <= 8 else 5
    grid = np.arange(-half, half + 1)
    x, y = np.meshgrid(grid, grid)
    disk = (x**2 + y**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    taps = np.arange(ksize) - (ksize - 1) / 2
    gauss = np.exp(-(taps**2) / (2.0 * alias_blur**2))
    smooth = filter_matrix(gauss / gauss.sum(), disk.shape[0], "mirror")
    kernel = smooth @ disk @ smooth.T
    kernel.setflags(write=False)
    return kernel


class DefocusBlur(Perturbation):
    """Every channel correlated with the anti-aliased disk (OpenCV `filter2D`, reflect-101)."""

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        radius, alias_blur = DEFOCUS[severity - 1]
        return fft_filter2d(images, disk_kernel(radius, alias_blur), "mirror")


class GlassBlur(Perturbation):
    """Blur, quantise to 8 bits, move pixels locally, blur again.

    ImageNet-C scans rows then columns from the bottom right, and for each pixel (h, w) runs
    `x[h, w], x[h', w'] = x[h', w'], x[h, w]` with (h', w') up to max_delta away. On an RGB array
    both sides are views, so this copies x[h', w'] into x[h, w] and leaves x[h', w'] as it was: a
    chain of copies, not swaps (the same in `imagecorruptions`' Numba loop); reproduced here. The
    chain only moves pixels, so it is computed once on pixel indices: sequential by definition,
    it runs as a compiled loop per image on the CPU; elsewhere a pixel reads its source's final
    value when the source was visited earlier in the scan, else its value before the scan, and the
    chains are resolved for the whole batch by pointer jumping (log-depth gathers).
    """

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        _, delta, iterations = GLASS[severity - 1]
        steps = (size - 2 * delta) ** 2
        # (dx, dy) per visited pixel, in scan order, as ImageNet-C's randint(-delta, delta, 2).
        offsets = torch.randint(
            -delta, delta, (iterations, steps, 2), generator=generator, dtype=torch.int16
        )
        return {"offsets": offsets}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        sigma, delta, _ = GLASS[severity - 1]
        size = images.shape[-1]
        blurred = gaussian_filter(images, float(sigma), _TRUNCATE, "nearest")
        quantised = torch.floor(blurred.clamp(0.0, 1.0) * 255.0) / 255.0
        index = glass_index_map(draws["offsets"], size, delta)
        batch = images.shape[0]
        flat = quantised.reshape(batch, 3, size * size)
        moved = flat.gather(2, index.unsqueeze(1).expand(batch, 3, size * size))
        return gaussian_filter(moved.reshape(images.shape), float(sigma), _TRUNCATE, "nearest")


@functools.lru_cache(maxsize=32)
def _scan_layout(
    size: int, delta: int, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ImageNet-C's visiting order: row, column and flat position of each step, and each pixel's
    step number (`steps` for pixels never visited)."""
    visited = torch.arange(size - delta, delta, -1, device=device)  # ImageNet-C's range()
    row = visited.repeat_interleave(visited.numel())  # rows outer, columns inner
    col = visited.repeat(visited.numel())
    position = row * size + col
    steps = position.numel()
    order = torch.full((size * size,), steps, dtype=torch.long, device=device)
    order[position] = torch.arange(steps, device=device)
    return row, col, position, order


def glass_index_map(offsets: torch.Tensor, size: int, delta: int) -> torch.Tensor:
    """For each output pixel, the flat index of the input pixel it ends up holding, (B, S*S).

    `offsets` is (B, iterations, steps, 2) with (dx, dy) per visited pixel in scan order. On the
    CPU the copy chain runs as the sequential loop it is (compiled, one image at a time);
    elsewhere it is resolved for the whole batch by pointer jumping. Both give the same map.
    """
    if offsets.device.type == "cpu":
        return torch.from_numpy(_glass_index_map_loop(offsets.numpy(), size, delta))
    return glass_index_map_jumping(offsets, size, delta)


def _glass_index_map_loop(offsets: np.ndarray, size: int, delta: int) -> np.ndarray:
    from ubsafe.perturb._glass_loop import copy_chain_maps

    return copy_chain_maps(np.ascontiguousarray(offsets, dtype=np.int64), size, delta)


def glass_index_map_jumping(offsets: torch.Tensor, size: int, delta: int) -> torch.Tensor:
    """`glass_index_map` for a whole batch on any device, by pointer jumping."""
    device = offsets.device
    batch, iterations, _, _ = offsets.shape
    row, col, position, order = _scan_layout(size, delta, str(device))
    step_number = order[position]  # 0, 1, ..., steps - 1
    identity = torch.arange(size * size, device=device).expand(batch, -1)
    total: torch.Tensor | None = None
    for iteration in range(iterations):
        dx, dy = offsets[:, iteration, :, 0], offsets[:, iteration, :, 1]
        source_of_step = (row + dy) * size + (col + dx)  # (B, steps)
        earlier = order[source_of_step] < step_number
        source = identity.index_copy(1, position, source_of_step)
        chained = torch.zeros(batch, size * size, dtype=torch.bool, device=device)
        chained = chained.index_copy(1, position, earlier)
        step_map = _resolve_chains(source, chained)
        total = step_map if total is None else total.gather(1, step_map)
    assert total is not None
    return total


def _resolve_chains(source: torch.Tensor, chained: torch.Tensor) -> torch.Tensor:
    """final[p] = final[source[p]] where chained[p], else source[p]: pointer jumping."""
    resolved = source.clone()
    pointer = source.clone()
    done = ~chained
    while not bool(done.all()):
        done_next = done.gather(1, pointer)
        newly = ~done & done_next
        resolved = torch.where(newly, resolved.gather(1, pointer), resolved)
        pointer = torch.where(~done & ~done_next, pointer.gather(1, pointer), pointer)
        done = done | done_next
    return resolved


class MotionBlur(Perturbation):
    """ImageMagick's motion blur at an angle drawn uniformly from [-45, 45) degrees."""

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        angle = torch.rand((), generator=generator, dtype=torch.float64) * 90.0 - 45.0
        return {"angle": angle}

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        radius, sigma = MOTION[severity - 1]
        return motion_blur(images, draws["angle"].cpu(), radius, sigma)


class ZoomBlur(Perturbation):
    """The mean of the image and its centre zooms (ImageNet-C's `clipped_zoom`)."""

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        size = images.shape[-1]
        zooms = ZOOMS[severity - 1]
        # Sum the zooms transposed and transpose once: one copy instead of one per zoom.
        total = torch.zeros_like(images)
        for factor in zooms:
            taps = zoom_taps(size, float(factor))
            total = total + resample_transposed(images, taps, taps)
        return (images + transpose(total)) / (len(zooms) + 1)
