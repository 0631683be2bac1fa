"""Small elementwise building blocks with a fixed order of floating-point operations.

Library reductions may split a sum differently with the thread count or the tensor size; the sums
here are pairwise trees of elementwise additions, so a sample's result is bitwise the same in any
batch, on any thread count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tree_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension by pairwise halving (zero-padded to a power of two)."""
    n = values.shape[-1]
    width = 1 << max(0, (n - 1).bit_length())
    if width != n:
        values = F.pad(values, (0, width - n))
    while width > 1:
        width //= 2
        values = values[..., :width] + values[..., width:]
    return values[..., 0]


def spatial_mean(images: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel mean of (B, C, H, W) images, shaped (B, C, 1, 1)."""
    batch, channels, height, width = images.shape
    total = tree_sum(images.reshape(batch, channels, height * width))
    return (total / (height * width)).view(batch, channels, 1, 1)


def l2_norm(values: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm over all but the first dimension, shaped (B, 1, ..., 1)."""
    batch = values.shape[0]
    squares = values.reshape(batch, -1) * values.reshape(batch, -1)
    norm = torch.sqrt(tree_sum(squares))
    return norm.view(batch, *([1] * (values.ndim - 1)))


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """OpenCV's COLOR_RGB2GRAY for float images: 0.299 R + 0.587 G + 0.114 B, shape (B, 1, H, W)."""
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return red * 0.299 + green * 0.587 + blue * 0.114
