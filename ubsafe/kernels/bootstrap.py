"""The multinomial bootstrap over confusion cells: intervals, gaps and paired differences.

Resampling n rows with replacement only changes how many rows fall into each confusion cell, and
those counts follow Multinomial(n, cells / n). So one replicate is one multinomial draw over 4 cells
(8 joint cells for paired predictions): O(1) per replicate instead of O(n), with exactly the
distribution of the row bootstrap.

Reproducibility: replicate b of group g draws from a stream keyed by (seeds[g], b) only
(`ubsafe.kernels.rng`), so results are bit-identical for any `NUMBA_NUM_THREADS`, and a group's
interval does not change when other groups are added, removed or reordered. Groups run in parallel.

Intervals are percentile intervals (linear interpolation between order statistics, as
`numpy.percentile`). A replicate whose metric is undefined takes `zero_division` like the point
value; with `zero_division=nan` such replicates are left out of the percentiles. An empty group
gets NaN throughout.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numba import prange
from numpy.typing import NDArray

from ubsafe.kernels._jit import helper, kernel
from ubsafe.kernels._validate import (
    counts_arg,
    level_arg,
    n_boot_arg,
    seeds_arg,
    zero_division_arg,
)
from ubsafe.kernels.confusion import (
    METRICS,
    cell_metrics,
    joint_to_cells,
    point_metrics,
    split_joint,
)
from ubsafe.kernels.rng import multinomial_replicates, replicate_states

Interval = tuple[NDArray[np.float64], NDArray[np.float64]]


class Difference(NamedTuple):
    """A per-group difference (a − b) of one metric with its bootstrap interval and p-value."""

    value: NDArray[np.float64]
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]
    p_value: NDArray[np.float64]


_N_BINS = 1024


@helper
def _bin(value: float, low: float, scale: float) -> int:
    # Monotone in `value`: a larger value never lands in a lower bin.
    return min(int((value - low) * scale), _N_BINS - 1)


@helper
def _ranked(
    values: np.ndarray, m: int, low: float, scale: float, below: np.ndarray, first: int, last: int
) -> tuple[float, float]:
    # Order statistics `first` and `last` (0-based, last - first <= 1) of values[:m]: sort only
    # the values in the bins that hold them. below[b] counts the values in bins before bin b.
    bin_first = 0
    while below[bin_first + 1] <= first:
        bin_first += 1
    bin_last = bin_first
    while below[bin_last + 1] <= last:
        bin_last += 1
    chosen = np.empty(below[bin_last + 1] - below[bin_first])
    n_chosen = 0
    for i in range(m):
        b = _bin(values[i], low, scale)
        if bin_first <= b <= bin_last:
            chosen[n_chosen] = values[i]
            n_chosen += 1
    chosen.sort()
    return chosen[first - below[bin_first]], chosen[last - below[bin_first]]


@helper
def _lerp(a: float, b: float, t: float) -> float:
    # numpy.percentile's interpolation, formula for formula (from the nearer end).
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


@helper
def _interpolate(ordered: np.ndarray, m: int, q: float) -> float:
    position = q * (m - 1)
    first = min(math.floor(position), m - 1)
    last = min(first + 1, m - 1)
    return _lerp(ordered[first], ordered[last], position - first)


@helper
def percentile_interval(values: np.ndarray, q_lo: float, q_hi: float) -> tuple[float, float]:
    """The q_lo and q_hi quantiles of the non-NaN `values`; NaN if there are none.

    Linear interpolation between order statistics, as `numpy.percentile`'s default. A histogram
    of the values locates the bins that hold the needed order statistics, and only those few
    values are sorted: O(B) overall. `values` is unchanged.
    """
    finite = np.empty_like(values)
    m = 0
    low = math.inf
    high = -math.inf
    for v in values:
        if not math.isnan(v):
            finite[m] = v
            m += 1
            low = min(low, v)
            high = max(high, v)
    if m == 0:
        return math.nan, math.nan
    if low == high:
        return low, low
    scale = _N_BINS / (high - low)
    if not math.isfinite(scale) or not math.isfinite(high - low):
        # Infinite values or a spread too small to bin: sort everything instead.
        ordered = np.sort(finite[:m])
        return _interpolate(ordered, m, q_lo), _interpolate(ordered, m, q_hi)
    below = np.zeros(_N_BINS + 1, dtype=np.int64)
    for i in range(m):
        below[_bin(finite[i], low, scale) + 1] += 1
    for b in range(1, _N_BINS + 1):
        below[b] += below[b - 1]
    result = np.empty(2)
    for j, q in enumerate((q_lo, q_hi)):
        position = q * (m - 1)
        first = min(math.floor(position), m - 1)
        last = min(first + 1, m - 1)
        x0, x1 = _ranked(finite, m, low, scale, below, first, last)
        result[j] = _lerp(x0, x1, position - first)
    return result[0], result[1]


@helper
def two_sided_p_value(differences: np.ndarray) -> float:
    """Twice the smaller bootstrap tail mass at zero, (count + 1) / (B + 1), capped at 1.

    This inverts the percentile interval: p < 1 − level exactly when the interval (nearly) excludes
    zero. NaN replicates are left out; NaN if there are none.
    """
    below = 0
    above = 0
    valid = 0
    for d in differences:
        if math.isnan(d):
            continue
        valid += 1
        if d <= 0.0:
            below += 1
        if d >= 0.0:
            above += 1
    if valid == 0:
        return math.nan
    return min(1.0, 2.0 * (min(below, above) + 1.0) / (valid + 1.0))


@helper
def _fill_single(
    cells: np.ndarray, seed: np.uint64, n_boot: int, zero_division: float, reps: np.ndarray
) -> None:
    draws = np.empty((n_boot, 4), dtype=np.int64)
    multinomial_replicates(cells, cells.sum(), replicate_states(seed, n_boot), draws)
    for b in range(n_boot):
        values = cell_metrics(draws[b, 0], draws[b, 1], draws[b, 2], draws[b, 3], zero_division)
        for m in range(4):
            reps[m, b] = values[m]


@helper
def _fill_gap(
    cells_a: np.ndarray,
    cells_b: np.ndarray,
    seed: np.uint64,
    n_boot: int,
    zero_division: float,
    reps: np.ndarray,
) -> None:
    # Replicate b draws sample a, then sample b, from its one stream.
    states = replicate_states(seed, n_boot)
    draws_a = np.empty((n_boot, 4), dtype=np.int64)
    draws_b = np.empty((n_boot, 4), dtype=np.int64)
    multinomial_replicates(cells_a, cells_a.sum(), states, draws_a)
    multinomial_replicates(cells_b, cells_b.sum(), states, draws_b)
    for b in range(n_boot):
        va = cell_metrics(draws_a[b, 0], draws_a[b, 1], draws_a[b, 2], draws_a[b, 3], zero_division)
        vb = cell_metrics(draws_b[b, 0], draws_b[b, 1], draws_b[b, 2], draws_b[b, 3], zero_division)
        for m in range(4):
            reps[m, b] = va[m] - vb[m]


@helper
def _fill_paired(
    joint: np.ndarray, seed: np.uint64, n_boot: int, zero_division: float, reps: np.ndarray
) -> None:
    draws = np.empty((n_boot, 8), dtype=np.int64)
    multinomial_replicates(joint, joint.sum(), replicate_states(seed, n_boot), draws)
    for b in range(n_boot):
        c = joint_to_cells(draws[b])
        va = cell_metrics(c[0], c[1], c[2], c[3], zero_division)
        vb = cell_metrics(c[4], c[5], c[6], c[7], zero_division)
        for m in range(4):
            reps[m, b] = va[m] - vb[m]


@kernel(parallel=True)
def _single_kernel(
    counts: np.ndarray,
    seeds: np.ndarray,
    n_boot: int,
    zero_division: float,
    q_lo: float,
    q_hi: float,
    lo: np.ndarray,
    hi: np.ndarray,
) -> None:
    for g in prange(counts.shape[0]):
        reps = np.full((4, n_boot), np.nan)
        if counts[g].sum() > 0:
            _fill_single(counts[g], seeds[g], n_boot, zero_division, reps)
        for m in range(4):
            lo[m, g], hi[m, g] = percentile_interval(reps[m], q_lo, q_hi)


@kernel(parallel=True)
def _distribution_kernel(
    counts: np.ndarray, seeds: np.ndarray, n_boot: int, zero_division: float, out: np.ndarray
) -> None:
    for g in prange(counts.shape[0]):
        if counts[g].sum() > 0:
            _fill_single(counts[g], seeds[g], n_boot, zero_division, out[g])
        else:
            out[g, :, :] = np.nan


@kernel(parallel=True)
def _gap_kernel(
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    seeds: np.ndarray,
    n_boot: int,
    zero_division: float,
    q_lo: float,
    q_hi: float,
    lo: np.ndarray,
    hi: np.ndarray,
    p_value: np.ndarray,
) -> None:
    for g in prange(counts_a.shape[0]):
        reps = np.full((4, n_boot), np.nan)
        if counts_a[g].sum() > 0 and counts_b[g].sum() > 0:
            _fill_gap(counts_a[g], counts_b[g], seeds[g], n_boot, zero_division, reps)
        for m in range(4):
            lo[m, g], hi[m, g] = percentile_interval(reps[m], q_lo, q_hi)
            p_value[m, g] = two_sided_p_value(reps[m])


@kernel(parallel=True)
def _paired_kernel(
    joint: np.ndarray,
    seeds: np.ndarray,
    n_boot: int,
    zero_division: float,
    q_lo: float,
    q_hi: float,
    lo: np.ndarray,
    hi: np.ndarray,
    p_value: np.ndarray,
) -> None:
    for g in prange(joint.shape[0]):
        reps = np.full((4, n_boot), np.nan)
        if joint[g].sum() > 0:
            _fill_paired(joint[g], seeds[g], n_boot, zero_division, reps)
        for m in range(4):
            lo[m, g], hi[m, g] = percentile_interval(reps[m], q_lo, q_hi)
            p_value[m, g] = two_sided_p_value(reps[m])


def tail_quantiles(level: float) -> tuple[float, float]:
    """The lower and upper quantiles of a two-sided interval at `level`."""
    alpha = 1.0 - level_arg(level)
    return alpha / 2.0, 1.0 - alpha / 2.0


def bootstrap_ci(
    counts: Any,
    seeds: Any,
    n_boot: int = 10_000,
    level: float = 0.95,
    zero_division: float = 0.0,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of F1, precision, recall and accuracy per group.

    `counts` is (G, 4) `tp, fp, fn, tn` (`confusion_counts`); `seeds` holds one unsigned 64-bit
    seed per group (`group_seed`). Returns `{metric: (lo, hi)}` with float64 arrays of length G.
    """
    c = counts_arg("counts", counts, 4)
    s = seeds_arg(seeds, c.shape[0])
    q_lo, q_hi = tail_quantiles(level)
    lo = np.empty((len(METRICS), c.shape[0]))
    hi = np.empty_like(lo)
    _single_kernel(c, s, n_boot_arg(n_boot), zero_division_arg(zero_division), q_lo, q_hi, lo, hi)
    return {name: (lo[m], hi[m]) for m, name in enumerate(METRICS)}


def bootstrap_distribution(
    counts: Any, seeds: Any, n_boot: int = 10_000, zero_division: float = 0.0
) -> NDArray[np.float64]:
    """Every replicate of `bootstrap_ci`: shape (G, 4 metrics, n_boot), in `METRICS` order.

    Memory is G × 4 × n_boot doubles; use it for diagnostics and tests, `bootstrap_ci` for tables.
    """
    c = counts_arg("counts", counts, 4)
    s = seeds_arg(seeds, c.shape[0])
    n_boot = n_boot_arg(n_boot)
    out = np.empty((c.shape[0], len(METRICS), n_boot))
    _distribution_kernel(c, s, n_boot, zero_division_arg(zero_division), out)
    return out


def bootstrap_gap(
    counts_a: Any,
    counts_b: Any,
    seeds: Any,
    n_boot: int = 10_000,
    level: float = 0.95,
    zero_division: float = 0.0,
) -> dict[str, Difference]:
    """Metric(a) − metric(b) for disjoint samples a and b (e.g. real vs AI-generated images).

    Each replicate resamples a and b independently (two multinomial draws from the replicate's
    stream). Returns `{metric: Difference(value, lo, hi, p_value)}`; the p-value is two-sided for
    "no difference" (`two_sided_p_value`). A group with an empty side is NaN.
    """
    a = counts_arg("counts_a", counts_a, 4)
    b = counts_arg("counts_b", counts_b, 4)
    if a.shape != b.shape:
        raise ValueError(f"counts_a {a.shape} and counts_b {b.shape}: expected one row per group")
    zd = zero_division_arg(zero_division)
    s = seeds_arg(seeds, a.shape[0])
    q_lo, q_hi = tail_quantiles(level)
    lo = np.empty((len(METRICS), a.shape[0]))
    hi = np.empty_like(lo)
    p = np.empty_like(lo)
    _gap_kernel(a, b, s, n_boot_arg(n_boot), zd, q_lo, q_hi, lo, hi, p)
    point_a = point_metrics(a, zd)
    point_b = point_metrics(b, zd)
    return {
        name: Difference(point_a[name] - point_b[name], lo[m], hi[m], p[m])
        for m, name in enumerate(METRICS)
    }


def bootstrap_paired(
    joint: Any,
    seeds: Any,
    n_boot: int = 10_000,
    level: float = 0.95,
    zero_division: float = 0.0,
) -> dict[str, Difference]:
    """Metric(a) − metric(b) for two predictions of the same rows, from (G, 8) `joint_counts`.

    Each replicate resamples rows once for both predictions (one draw over the joint cells), which
    keeps their correlation. Returns `{metric: Difference(value, lo, hi, p_value)}`.
    """
    j = counts_arg("joint", joint, 8)
    zd = zero_division_arg(zero_division)
    s = seeds_arg(seeds, j.shape[0])
    q_lo, q_hi = tail_quantiles(level)
    lo = np.empty((len(METRICS), j.shape[0]))
    hi = np.empty_like(lo)
    p = np.empty_like(lo)
    _paired_kernel(j, s, n_boot_arg(n_boot), zd, q_lo, q_hi, lo, hi, p)
    counts_a, counts_b = split_joint(j)
    point_a = point_metrics(counts_a, zd)
    point_b = point_metrics(counts_b, zd)
    return {
        name: Difference(point_a[name] - point_b[name], lo[m], hi[m], p[m])
        for m, name in enumerate(METRICS)
    }
