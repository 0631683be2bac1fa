"""Poisson draws for shot noise, for a whole batch, by inversion from uniforms.

`torch.poisson` samples element by element on the CPU (slower than NumPy) and on a GPU its stream
depends on the launch layout. Here the randomness is two uniforms per value, drawn per sample,
and the rest is table lookups and elementwise arithmetic. For a pixel value x and rate lam:

    Poisson(x * lam) = Poisson(k * lam / 255) + Poisson(r)

with k the 8-bit level at or below x and r = (x - k / 255) * lam in [0, lam / 255)

(a sum of independent Poisson variables is Poisson). The first term is inverted from u1 with a
CDF table per level (a guide table narrows the search to one or two entries for most values);
the second, needed only for values between levels, from u2 by thinning a Poisson(lam / 255)
draw (inverted from a small table) with a binomial, so no exp is evaluated anywhere. Decoded images
are 8-bit, but float32 cannot hold k / 255 exactly: a value within 1e-4 / 255 of a level counts
as that level (a change in rate below 3e-5, far beneath anything an image can show).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

LEVELS = 255
#: How far (in 8-bit steps) float32 rounding may move a level; such values snap to the level.
_SNAP = 1e-4
#: Guide buckets per table column: most buckets hold no CDF step, so most values need no search.
_GUIDE_PER_K = 4


@functools.lru_cache(maxsize=8)
def _tables(rate: float) -> tuple[np.ndarray, np.ndarray]:
    """CDF table (rows: rates k * rate / 255, k = 0..255) and guide table (rows, buckets + 1)."""
    rates = np.arange(LEVELS + 1, dtype=np.float64) * rate / LEVELS
    # Far beyond 12 standard deviations: the tail left out is below 1e-30 for every rate.
    kmax = int(np.ceil(rate + 12.0 * np.sqrt(rate) + 30.0))
    pmf = np.empty((rates.size, kmax + 1), dtype=np.float64)
    pmf[:, 0] = np.exp(-rates)
    for k in range(1, kmax + 1):
        pmf[:, k] = pmf[:, k - 1] * rates / k
    cdf = np.cumsum(pmf, axis=1)
    cdf[:, -1] = 1.0  # every u in [0, 1) stops inside the table
    # guide[j] = the quantile at the bucket edge j / buckets; the last entry closes the last
    # bucket, so the answer for u in bucket j lies in [guide[j], guide[j + 1]].
    buckets = _GUIDE_PER_K * (kmax + 1)
    edges = np.arange(buckets + 1, dtype=np.float64) / buckets
    guide = np.stack([np.searchsorted(row, edges, side="right") for row in cdf])
    guide[:, -1] = kmax
    return cdf, guide.astype(np.int32)  # small entries: the table stays in cache


@functools.lru_cache(maxsize=8)
def _device_tables(rate: float, device: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    cdf, guide = _tables(rate)
    return (
        torch.as_tensor(cdf.reshape(-1), device=device),
        torch.as_tensor(guide.reshape(-1), device=device),
        cdf.shape[1],
    )


def _invert_levels(levels: torch.Tensor, u: torch.Tensor, rate: float) -> torch.Tensor:
    """Poisson(levels * rate / 255) from u (flat tensors): the guide bounds the answer to
    [guide[j], guide[j + 1]] for u in bucket j; where that is not a single value, bisect."""
    cdf, guide, width = _device_tables(rate, str(u.device))
    buckets = _GUIDE_PER_K * width
    edge = levels * (buckets + 1) + torch.floor(u * buckets).long()
    low = guide.index_select(0, edge).long()
    high = guide.index_select(0, edge + 1).long()
    open_ = torch.nonzero(low < high).squeeze(1)
    lo, hi = low[open_], high[open_]
    base, target = levels[open_] * width, u[open_]
    while True:
        searching = lo < hi
        if not bool(searching.any()):
            break
        mid = (lo + hi) >> 1
        right = cdf.index_select(0, base + mid) <= target
        lo = torch.where(searching & right, mid + 1, lo)
        hi = torch.where(searching & ~right, mid, hi)
    low[open_] = lo
    return low


@functools.lru_cache(maxsize=8)
def _step_cdf(delta: float, device: str) -> torch.Tensor:
    """CDF of Poisson(delta) for the rate of one 8-bit step, with its last entry set to 1."""
    count = int(np.ceil(delta + 12.0 * np.sqrt(delta) + 30.0))
    pmf = np.empty(count + 1)
    pmf[0] = np.exp(-delta)
    for n in range(1, count + 1):
        pmf[n] = pmf[n - 1] * delta / n
    cdf = np.cumsum(pmf)
    cdf[-1] = 1.0
    return torch.as_tensor(cdf, device=device)


def _invert_between(fraction: torch.Tensor, u: torch.Tensor, delta: float) -> torch.Tensor:
    """Poisson(fraction * delta) from u (flat tensors), fraction in (0, 1), by thinning:
    N ~ Poisson(delta) is inverted from u, then Binomial(N, fraction) from where u fell inside
    N's CDF step (uniform given N). Products and quotients only, no exp."""
    cdf = _step_cdf(delta, str(u.device))
    counts = torch.zeros(u.shape, dtype=torch.long, device=u.device)
    pending = torch.nonzero(u >= cdf[0]).squeeze(1)  # N = 0 (most values): nothing to add
    target = u[pending]
    trials = torch.searchsorted(cdf, target, right=True)
    low = cdf.index_select(0, trials - 1)
    high = cdf.index_select(0, trials)
    within = (target - low) / (high - low)  # uniform in [0, 1) given N
    p = fraction[pending]
    q = 1.0 - p
    pmf = torch.ones_like(p)
    for power in range(1, int(trials.max()) + 1 if trials.numel() else 1):
        pmf = torch.where(trials >= power, pmf * q, pmf)  # q ** N
    successes = torch.zeros_like(trials)
    total = pmf
    while True:
        step = (within >= total) & (successes < trials)
        if not bool(step.any()):
            break
        pmf = torch.where(step, pmf * (trials - successes) / (successes + 1) * p / q, pmf)
        successes = successes + step
        total = torch.where(step, total + pmf, total)
    counts[pending] = successes
    return counts


def shot_counts(
    images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor, rate: float
) -> torch.Tensor:
    """Poisson(images * rate) as float64, from uniforms u1, u2 in [0, 1) of the same shape.

    `images` lie in [0, 1].
    """
    scaled = images.reshape(-1).to(torch.float64) * LEVELS
    levels = torch.floor(scaled + _SNAP)
    between = scaled - levels
    counts = _invert_levels(levels.long(), u1.reshape(-1), rate)
    off_level = torch.nonzero(between > _SNAP).squeeze(1)
    if off_level.numel():
        extra = _invert_between(between[off_level], u2.reshape(-1)[off_level], rate / LEVELS)
        counts[off_level] += extra
    return counts.to(torch.float64).reshape(images.shape)
