"""The diamond-square plasma fractal of ImageNet-C's fog, for a whole batch at once.

Each level fills the square centres, then the two sets of diamond centres, with the mean of their
four neighbours (periodic) plus `wibble * U(-wibble, wibble)`; `wibble` starts at 100 and is
divided by `decay` per level. The map is shifted to min 0 and divided by its max. Every operation
is elementwise, a strided slice or a roll; the uniforms come from each sample's own generator.
"""

from __future__ import annotations

import torch


def plasma_uniform_count(mapsize: int) -> int:
    """How many U[0,1) draws one map of side `mapsize` (a power of two) consumes."""
    count, step = 0, mapsize
    while step >= 2:
        count += 3 * (mapsize // step) ** 2
        step //= 2
    return count


def next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def plasma_fractal(uniforms: torch.Tensor, mapsize: int, decay: float) -> torch.Tensor:
    """(B, mapsize, mapsize) float64 maps in [0, 1] from (B, plasma_uniform_count) uniforms."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    batch = uniforms.shape[0]
    maps = torch.zeros(batch, mapsize, mapsize, dtype=torch.float64, device=uniforms.device)
    used = 0
    wibble = 100.0
    step = mapsize

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        nonlocal used
        count = total.shape[1] * total.shape[2]
        u = uniforms[:, used : used + count].reshape(total.shape)
        used += count
        return total / 4 + wibble * (-wibble + (wibble - -wibble) * u)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        total = corners + torch.roll(corners, -1, dims=1)
        total = total + torch.roll(total, -1, dims=2)
        maps[:, half::step, half::step] = wibbled_mean(total)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        left = (centres + torch.roll(centres, 1, dims=1)) + (
            corners + torch.roll(corners, -1, dims=2)
        )
        maps[:, 0::step, half::step] = wibbled_mean(left)
        top = (centres + torch.roll(centres, 1, dims=2)) + (
            corners + torch.roll(corners, -1, dims=1)
        )
        maps[:, half::step, 0::step] = wibbled_mean(top)
        step //= 2
        wibble /= decay
    maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    return maps / maps.amax(dim=(1, 2), keepdim=True)
