"""Resampling as gathers plus elementwise weights: exact copies, a fixed order of additions.

`torch.nn.functional.interpolate` and `grid_sample` pick different code paths by thread count on
the CPU (observed: 1 vs 2 threads differ in the last bit), so resampling here is written out: each
output is a weighted sum of gathered inputs, added tap by tap in a fixed order.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ubsafe.perturb._filters import BoundaryMode


@dataclass(frozen=True)
class Taps:
    """A 1-D resampling shared by the batch: output o = sum_t weight[o, t] * input[index[o, t]]."""

    index: np.ndarray  # (out, taps) int64, valid input positions
    weight: np.ndarray  # (out, taps) float64

    @property
    def size(self) -> int:
        return int(self.index.shape[0])


def resample_rows(images: torch.Tensor, taps: Taps) -> torch.Tensor:
    """Resample the second-to-last dimension (rows) with `taps`, adding the taps in order."""
    device = images.device
    out: torch.Tensor | None = None
    for t in range(taps.index.shape[1]):
        index = torch.as_tensor(taps.index[:, t], device=device)
        weight = torch.as_tensor(taps.weight[:, t], dtype=images.dtype, device=device)
        term = images.index_select(-2, index) * weight.view(-1, 1)
        out = term if out is None else out + term
    assert out is not None
    return out


def transpose(images: torch.Tensor) -> torch.Tensor:
    """Swap the last two dimensions, contiguously."""
    return images.transpose(-1, -2).contiguous()


def resample_transposed(images: torch.Tensor, rows: Taps, cols: Taps) -> torch.Tensor:
    """The transpose of `resample(images, rows, cols)`.

    Gathering whole rows is several times faster than gathering columns, so the columns are
    resampled as rows of the transposed intermediate.
    """
    return resample_rows(transpose(resample_rows(images, rows)), cols)


def resample(images: torch.Tensor, rows: Taps, cols: Taps) -> torch.Tensor:
    """Resample the last two dimensions: rows with `rows`, then columns with `cols`."""
    return transpose(resample_transposed(images, rows, cols))


@functools.lru_cache(maxsize=256)
def zoom_taps(size: int, factor: float) -> Taps:
    """ImageNet-C's `clipped_zoom` along one axis of a square image.

    Crop the centre ceil(size / factor), zoom it like `scipy.ndimage.zoom(order=1)` (corners
    aligned, output round(crop * factor)), trim the centre back to `size`.
    """
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    zoomed = round(crop * factor)  # Python rounding, as scipy.ndimage.zoom
    trim = (zoomed - size) // 2
    ratio = (crop - 1) / (zoomed - 1) if zoomed > 1 else 1.0
    coord = (np.arange(trim, trim + size, dtype=np.float64)) * ratio
    coord = np.minimum(coord, crop - 1)
    low = np.floor(coord).astype(np.int64)
    frac = coord - low
    high = np.minimum(low + 1, crop - 1)
    index = np.stack([low, high], axis=1) + top
    weight = np.stack([1.0 - frac, frac], axis=1)
    return Taps(index=index, weight=weight)


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


@functools.lru_cache(maxsize=64)
def pil_box_taps(in_size: int, out_size: int) -> Taps:
    """PIL's `Image.resize(..., Image.BOX)` along one axis (its `precompute_coeffs`)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    width = math.ceil(support) * 2 + 1
    index = np.zeros((out_size, width), dtype=np.int64)
    weight = np.zeros((out_size, width), dtype=np.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        low = max(int(center - support + 0.5), 0)
        high = min(int(center + support + 0.5), in_size)
        positions = np.arange(low, high)
        w = _box((positions - center + 0.5) / filterscale)
        if w.sum() != 0.0:
            w = w / w.sum()
        index[out, : positions.size] = positions
        index[out, positions.size :] = positions[-1] if positions.size else 0
        weight[out, : positions.size] = w
    return Taps(index=index, weight=weight)


def fold_index_tensor(index: torch.Tensor, size: int, mode: BoundaryMode) -> torch.Tensor:
    """`_filters.fold_index` on integer tensors (reflect, mirror and nearest)."""
    if mode == "nearest":
        return index.clamp(0, size - 1)
    if mode not in ("reflect", "mirror"):
        raise ValueError(f"bilinear sampling supports reflect, mirror and nearest, not {mode!r}")
    # Most positions fold at most once: two reflections are cheaper than an integer remainder.
    low, high = (-size, 2 * size - 1) if mode == "reflect" else (-size + 1, 2 * size - 2)
    if index.numel() and (int(index.min()) < low or int(index.max()) > high):
        period = 2 * size if mode == "reflect" else max(2 * size - 2, 1)
        index = torch.remainder(index, period)
    last = -1 if mode == "reflect" else 0
    index = torch.where(index < 0, last - index, index)
    return torch.where(index >= size, 2 * size - 2 - last - index, index)


def bilinear_sample(
    images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: BoundaryMode
) -> torch.Tensor:
    """Sample (B, C, H, W) images at per-sample positions (B, H, W) (row, column), bilinearly.

    Positions outside the image read the extended image given by `mode` (the integer neighbours
    are folded, as `scipy.ndimage.map_coordinates(order=1)` does).
    """
    batch, channels, height, width = images.shape
    row0 = torch.floor(rows)
    col0 = torch.floor(cols)
    wr = (rows - row0).to(images.dtype).unsqueeze(1)
    wc = (cols - col0).to(images.dtype).unsqueeze(1)
    r0, c0 = row0.long(), col0.long()
    top_rows = fold_index_tensor(r0, height, mode) * width
    bottom_rows = fold_index_tensor(r0 + 1, height, mode) * width
    left_cols = fold_index_tensor(c0, width, mode)
    right_cols = fold_index_tensor(c0 + 1, width, mode)
    flat = images.reshape(batch, channels, height * width)

    def gather(rows_part: torch.Tensor, cols_part: torch.Tensor) -> torch.Tensor:
        index = (rows_part + cols_part).reshape(batch, 1, height * width)
        gathered = flat.gather(2, index.expand(batch, channels, height * width))
        return gathered.reshape(batch, channels, height, width)

    wc0, wr0 = 1 - wc, 1 - wr
    top = gather(top_rows, left_cols) * wc0 + gather(top_rows, right_cols) * wc
    bottom = gather(bottom_rows, left_cols) * wc0 + gather(bottom_rows, right_cols) * wc
    return top * wr0 + bottom * wr
