"""ImageNet-C's glass-blur copy chain as a compiled loop over index maps (CPU).

Kept in its own module so that Numba is imported, and the loop compiled, only when glass blur
runs on the CPU.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def copy_chain_maps(offsets: np.ndarray, size: int, delta: int) -> np.ndarray:  # pragma: no cover
    """(B, S*S) maps: ImageNet-C's scan `x[h, w] = x[h + dy, w + dx]` applied to pixel indices.

    `offsets` is (B, iterations, steps, 2) int64 with (dx, dy) per visited pixel in scan order
    (rows from S - delta down to delta + 1, columns likewise, inner).
    """
    batch, iterations, _, _ = offsets.shape
    maps = np.empty((batch, size * size), dtype=np.int64)
    for b in range(batch):
        index = np.arange(size * size)
        for iteration in range(iterations):
            step = 0
            for h in range(size - delta, delta, -1):
                for w in range(size - delta, delta, -1):
                    dx = offsets[b, iteration, step, 0]
                    dy = offsets[b, iteration, step, 1]
                    index[h * size + w] = index[(h + dy) * size + (w + dx)]
                    step += 1
        maps[b] = index
    return maps
