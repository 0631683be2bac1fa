"""ImageMagick's motion blur (`MotionBlurImage`), which ImageNet-C called through Wand.

The kernel is a one-sided Gaussian of width 2 * ceil(radius) + 1 along a line at `angle`: tap i
reads the pixel at (x + round(i cos a), y + round(i sin a)) (ImageMagick rounds with
ceil(t - 0.5)) with weight exp(-i^2 / (2 sigma^2)), normalised; pixels past the border repeat the
edge (ImageMagick's default virtual-pixel method). Differences from the Wand call: the result is
not rounded to 8 bits, and no PNG round trip; `imagecorruptions` instead stops at the first tap
that leaves the image (and loses its weight), which only matters for images smaller than the kernel.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def motion_weights(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's normalised one-sided Gaussian kernel (`GetMotionBlurKernel`)."""
    width = int(2 * math.ceil(radius) + 1)
    taps = np.arange(width, dtype=np.float64)
    weights = np.exp(-(taps * taps) / (2.0 * sigma * sigma)) / (math.sqrt(2.0 * math.pi) * sigma)
    return weights / weights.sum()


def motion_offsets(width: int, angle: float) -> np.ndarray:
    """Integer (row, column) offsets of the `width` taps at `angle` degrees, shape (width, 2)."""
    radians = math.radians(angle)
    point_x = width * math.sin(radians)
    point_y = width * math.cos(radians)
    length = math.hypot(point_x, point_y)
    taps = np.arange(width, dtype=np.float64)
    cols = np.ceil(taps * point_y / length - 0.5)
    rows = np.ceil(taps * point_x / length - 0.5)
    return np.stack([rows, cols], axis=1).astype(np.int64)


def motion_blur(
    images: torch.Tensor, angles: torch.Tensor, radius: float, sigma: float
) -> torch.Tensor:
    """Blur each (C, S, S) image of the batch along its own angle (degrees, one per sample).

    Tap i of image b reads the image shifted by its own offset. On the CPU each image is blurred
    on its own from shifted views of the edge-padded image (no index arithmetic, cache-resident);
    elsewhere each tap is one gather for the whole batch. Both add the same terms in tap order,
    so they agree bitwise.
    """
    weights = motion_weights(radius, sigma)
    offsets = np.stack([motion_offsets(weights.size, float(a)) for a in angles.tolist()])
    if images.device.type == "cpu":
        return _blur_by_views(images, offsets, weights)
    return motion_blur_gathered(images, offsets, weights)


def _blur_by_views(images: torch.Tensor, offsets: np.ndarray, weights: np.ndarray) -> torch.Tensor:
    pad = weights.size  # no offset reaches farther than width - 1
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    height, width = images.shape[-2:]
    out = torch.empty_like(images)
    for index, image_offsets in enumerate(offsets.tolist()):
        total: torch.Tensor | None = None
        for (row, col), weight in zip(image_offsets, weights.tolist(), strict=True):
            view = padded[index, :, pad + row : pad + row + height, pad + col : pad + col + width]
            term = view * weight
            total = term if total is None else total + term
        assert total is not None
        out[index] = total
    return out


def motion_blur_gathered(
    images: torch.Tensor, offsets: np.ndarray, weights: np.ndarray
) -> torch.Tensor:
    """The batched form: per tap, one gather of every image at its own clamped offset."""
    batch, channels, height, width = images.shape
    device = images.device
    shifts = torch.as_tensor(offsets, device=device)  # (B, taps, 2)
    row_base = torch.arange(height, device=device)
    col_base = torch.arange(width, device=device)
    flat = images.reshape(batch, channels, height * width)
    total: torch.Tensor | None = None
    for tap, weight in enumerate(weights.tolist()):
        rows = (row_base + shifts[:, tap, 0:1]).clamp(0, height - 1)  # (B, H)
        cols = (col_base + shifts[:, tap, 1:2]).clamp(0, width - 1)  # (B, W)
        index = (rows.unsqueeze(2) * width + cols.unsqueeze(1)).reshape(batch, 1, -1)
        term = flat.gather(2, index.expand(batch, channels, height * width)) * weight
        total = term if total is None else total + term
    assert total is not None
    return total.reshape(images.shape)
