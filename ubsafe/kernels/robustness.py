"""Robustness of decisions under perturbation, from the joint cells of (label, clean, perturbed).

Build the cells with `joint_counts(group, label, pred_clean, pred_perturbed, n_groups)` (clean is
prediction a, perturbed is prediction b). Definitions:

- Robust Accuracy (UnsafeBench's, conditional): of the rows classified correctly when clean, the
  fraction still correct when perturbed; 1 − attack success rate.
- Flip rate: of all rows, the fraction whose decision changes (labels not needed).

The bootstrap resamples all rows of a group, so the random size of the clean-correct subset is part
of the interval. Both statistics depend on the rows only through four outcomes (correct when clean
and when perturbed, only when clean, only when perturbed, neither), so one replicate is one
multinomial draw over those four sums of joint cells. When the rows are already restricted to
clean-correct images (UnsafeBench's 500-image protocol) this is the binomial bootstrap of RA.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import prange
from numpy.typing import NDArray

from ubsafe.kernels._jit import helper, kernel
from ubsafe.kernels._validate import (
    counts_arg,
    n_boot_arg,
    seeds_arg,
    zero_division_arg,
)
from ubsafe.kernels.bootstrap import Interval, percentile_interval, tail_quantiles
from ubsafe.kernels.rng import multinomial_replicates, replicate_states

#: Columns of `robustness_counts`.
ROBUSTNESS_COUNTS: tuple[str, ...] = ("n", "n_clean_correct", "n_still_correct", "n_flipped")
#: The statistics `bootstrap_robustness` returns intervals for.
ROBUSTNESS_METRICS: tuple[str, ...] = ("robust_accuracy", "flip_rate")


@helper
def _outcome_cells(j: np.ndarray) -> np.ndarray:
    # (clean correct, perturbed correct) outcomes from joint column 4*label + 2*clean + perturbed:
    # both correct, only clean correct, only perturbed correct, neither.
    return np.array([j[0] + j[7], j[1] + j[6], j[2] + j[5], j[3] + j[4]], dtype=np.int64)


@helper
def _robustness_values(
    both: int, clean_only: int, perturbed_only: int, neither: int, zero_division: float
) -> tuple[float, float]:
    n = both + clean_only + perturbed_only + neither
    if n == 0:
        return math.nan, math.nan
    clean_correct = both + clean_only
    ra = both / clean_correct if clean_correct > 0 else zero_division
    return ra, (clean_only + perturbed_only) / n


@kernel(parallel=True)
def _robustness_kernel(
    joint: np.ndarray,
    seeds: np.ndarray,
    n_boot: int,
    zero_division: float,
    q_lo: float,
    q_hi: float,
    lo: np.ndarray,
    hi: np.ndarray,
) -> None:
    for g in prange(joint.shape[0]):
        reps = np.full((2, n_boot), np.nan)
        outcomes = _outcome_cells(joint[g])
        n = outcomes.sum()
        if n > 0:
            draws = np.empty((n_boot, 4), dtype=np.int64)
            multinomial_replicates(outcomes, n, replicate_states(seeds[g], n_boot), draws)
            for b in range(n_boot):
                reps[0, b], reps[1, b] = _robustness_values(
                    draws[b, 0], draws[b, 1], draws[b, 2], draws[b, 3], zero_division
                )
        for m in range(2):
            lo[m, g], hi[m, g] = percentile_interval(reps[m], q_lo, q_hi)


def robustness_counts(joint: Any) -> NDArray[np.int64]:
    """Per group: n, n correct when clean, n still correct when perturbed, n flipped: (G, 4)."""
    j = counts_arg("joint", joint, 8)
    return np.stack(
        [
            j.sum(axis=1),
            j[:, 0] + j[:, 1] + j[:, 6] + j[:, 7],
            j[:, 0] + j[:, 7],
            j[:, 1] + j[:, 2] + j[:, 5] + j[:, 6],
        ],
        axis=1,
    )


def robust_accuracy(joint: Any, zero_division: float = math.nan) -> NDArray[np.float64]:
    """Still correct / correct when clean, per group; `zero_division` where none was correct.

    An empty group is NaN.
    """
    counts = robustness_counts(joint)
    zd = zero_division_arg(zero_division)
    with np.errstate(invalid="ignore", divide="ignore"):
        ra = counts[:, 2] / counts[:, 1]
    ra[counts[:, 1] == 0] = zd
    ra[counts[:, 0] == 0] = np.nan
    return ra


def flip_rate(joint: Any) -> NDArray[np.float64]:
    """The fraction of all rows whose decision changes under the perturbation; NaN if empty."""
    counts = robustness_counts(joint)
    return np.where(counts[:, 0] > 0, counts[:, 3] / np.maximum(counts[:, 0], 1), np.nan)


def bootstrap_robustness(
    joint: Any,
    seeds: Any,
    n_boot: int = 10_000,
    level: float = 0.95,
    zero_division: float = math.nan,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of Robust Accuracy and flip rate per group.

    `joint` is (G, 8) `joint_counts` of (label, clean, perturbed); `seeds` one seed per group.
    Replicates with no clean-correct row take `zero_division` for RA (NaN: left out).
    Returns `{"robust_accuracy": (lo, hi), "flip_rate": (lo, hi)}`.
    """
    j = counts_arg("joint", joint, 8)
    s = seeds_arg(seeds, j.shape[0])
    q_lo, q_hi = tail_quantiles(level)
    lo = np.empty((len(ROBUSTNESS_METRICS), j.shape[0]))
    hi = np.empty_like(lo)
    zd = zero_division_arg(zero_division)
    _robustness_kernel(j, s, n_boot_arg(n_boot), zd, q_lo, q_hi, lo, hi)
    return {name: (lo[m], hi[m]) for m, name in enumerate(ROBUSTNESS_METRICS)}
