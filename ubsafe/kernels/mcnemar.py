"""McNemar's exact test for two predictions of the same rows, from their joint cells."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ubsafe.kernels._jit import helper, kernel
from ubsafe.kernels._validate import counts_arg


@helper
def binomial_half_two_sided(k: int, n: int) -> float:
    """Two-sided exact p-value of k successes in n trials with p = 1/2 (1.0 when n = 0).

    Sums the smaller tail from its largest term down (ratios of consecutive pmf terms), in log
    space for the scale, so p-values far below 1e-300 come out as 0 rather than as NaN.
    """
    if n <= 0:
        return 1.0
    small = min(k, n - k)
    if 2 * small == n:
        return 1.0
    log_term = (
        math.lgamma(n + 1.0) - math.lgamma(small + 1.0) - math.lgamma(n - small + 1.0)
    ) - n * math.log(2.0)
    total = 1.0
    term = 1.0
    for i in range(small, 0, -1):
        term *= i / (n - i + 1.0)
        total += term
        if term < 1e-17 * total:
            break
    return min(1.0, math.exp(math.log(2.0) + log_term + math.log(total)))


@kernel()
def _mcnemar_kernel(joint: np.ndarray, out: np.ndarray) -> None:
    for g in range(joint.shape[0]):
        a_only = joint[g, 1] + joint[g, 6]
        b_only = joint[g, 2] + joint[g, 5]
        out[g] = binomial_half_two_sided(a_only, a_only + b_only)


def discordant_counts(joint: Any) -> NDArray[np.int64]:
    """Per group: rows only prediction a got right, rows only prediction b got right: (G, 2)."""
    j = counts_arg("joint", joint, 8)
    return np.stack([j[:, 1] + j[:, 6], j[:, 2] + j[:, 5]], axis=1)


def mcnemar(joint: Any) -> NDArray[np.float64]:
    """McNemar's exact two-sided p-value per group from (G, 8) `joint_counts`.

    The discordant rows are those exactly one prediction classifies correctly; under the null
    hypothesis (equal accuracy) each is a fair coin, so the p-value is the exact binomial test of
    one side's count (as `scipy.stats.binomtest(k, n, 0.5)`). No discordant rows gives 1.0.
    """
    j = counts_arg("joint", joint, 8)
    out = np.empty(j.shape[0])
    _mcnemar_kernel(j, out)
    return out
