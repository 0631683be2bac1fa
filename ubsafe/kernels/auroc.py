"""AUROC with DeLong confidence intervals, per group, from one sort of the rows.

Within a group, rows sorted by score form blocks of tied scores. With m positives and k negatives,
each positive's DeLong placement is (negatives below + half the tied negatives) / k and each
negative's is (positives above + half the tied positives) / m; the AUROC is the mean placement of
the positives (ties count one half, as `sklearn.metrics.roc_auc_score`), and its variance is
var(positive placements)/m + var(negative placements)/k (DeLong, DeLong & Clarke-Pearson 1988, in
the midrank form of Sun & Xu 2014). The interval is AUROC ± z·SE, clipped to [0, 1].

Undefined cases give NaN: a group with one class only, or holding a NaN score (the AUROC and the
interval); fewer than two rows of either class (the interval).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np
from numba import prange

from ubsafe.kernels._jit import kernel
from ubsafe.kernels._validate import as_1d, level_arg, n_groups_arg, same_length


class AurocInterval(NamedTuple):
    """AUROC and its DeLong interval (floats for one sample, arrays for groups)."""

    auroc: Any
    lo: Any
    hi: Any


@kernel(parallel=True)
def _delong_kernel(
    label: np.ndarray,
    score: np.ndarray,
    offsets: np.ndarray,
    z: float,
    auc_out: np.ndarray,
    lo_out: np.ndarray,
    hi_out: np.ndarray,
) -> None:
    for g in prange(offsets.shape[0] - 1):
        start, stop = offsets[g], offsets[g + 1]
        auc_out[g] = math.nan
        lo_out[g] = math.nan
        hi_out[g] = math.nan
        n_pos = 0
        has_nan = False
        for i in range(start, stop):
            n_pos += label[i]
            if math.isnan(score[i]):
                has_nan = True
        n_neg = stop - start - n_pos
        if has_nan or n_pos == 0 or n_neg == 0:
            continue
        # Pass 1: AUROC as the mean placement of the positives.
        placement_sum = 0.0
        neg_below = 0
        i = start
        while i < stop:
            j = i
            pos_tied = 0
            while j < stop and score[j] == score[i]:
                pos_tied += label[j]
                j += 1
            neg_tied = (j - i) - pos_tied
            placement_sum += pos_tied * (neg_below + 0.5 * neg_tied)
            neg_below += neg_tied
            i = j
        auc = placement_sum / (n_pos * n_neg)
        auc_out[g] = auc
        if n_pos < 2 or n_neg < 2:
            continue
        # Pass 2: spread of the placements of each class around the AUROC.
        ss_pos = 0.0
        ss_neg = 0.0
        neg_below = 0
        pos_below = 0
        i = start
        while i < stop:
            j = i
            pos_tied = 0
            while j < stop and score[j] == score[i]:
                pos_tied += label[j]
                j += 1
            neg_tied = (j - i) - pos_tied
            v_pos = (neg_below + 0.5 * neg_tied) / n_neg
            v_neg = (n_pos - pos_below - 0.5 * pos_tied) / n_pos
            ss_pos += pos_tied * (v_pos - auc) ** 2
            ss_neg += neg_tied * (v_neg - auc) ** 2
            neg_below += neg_tied
            pos_below += pos_tied
            i = j
        variance = ss_pos / (n_pos - 1) / n_pos + ss_neg / (n_neg - 1) / n_neg
        half_width = z * math.sqrt(variance)
        lo_out[g] = max(0.0, auc - half_width)
        hi_out[g] = min(1.0, auc + half_width)


def grouped_auroc_ci(
    group: Any, label: Any, score: Any, n_groups: int, level: float = 0.95
) -> AurocInterval:
    """AUROC and its DeLong interval per group: three float64 arrays of length n_groups.

    `label` is 0/1 (unsafe = 1, the positive class); a higher `score` means more unsafe.
    """
    g = as_1d("group", group, np.int64)
    y = as_1d("label", label, np.int8)
    s = np.asarray(score)
    if s.ndim != 1 or (s.size and s.dtype.kind not in "fiub"):
        raise TypeError(f"score: expected a 1-D numeric array, got {s.dtype} of shape {s.shape}")
    s = np.ascontiguousarray(s, dtype=np.float64)
    same_length(group=g, label=y, score=s)
    n_groups = n_groups_arg(n_groups)
    if g.size and (g.min() < 0 or g.max() >= n_groups):
        bad = int(np.argmax((g < 0) | (g >= n_groups)))
        raise ValueError(f"group: row {bad} has group {g[bad]}, outside [0, {n_groups})")
    if y.size and not np.all((y == 0) | (y == 1)):
        bad = int(np.argmax((y != 0) & (y != 1)))
        raise ValueError(f"label: row {bad} has label {y[bad]}; expected 0 or 1 (unsafe = 1)")
    order = np.lexsort((s, g))  # by group, then score (NaN last)
    offsets = np.searchsorted(g[order], np.arange(n_groups + 1))
    z = NormalDist().inv_cdf(0.5 + level_arg(level) / 2.0)
    auc = np.empty(n_groups)
    lo = np.empty(n_groups)
    hi = np.empty(n_groups)
    _delong_kernel(y[order], s[order], offsets.astype(np.int64), z, auc, lo, hi)
    return AurocInterval(auc, lo, hi)


def auroc_ci(label: Any, score: Any, level: float = 0.95) -> AurocInterval:
    """AUROC of `score` for the 0/1 `label` with its DeLong interval, as floats."""
    y = np.asarray(label)
    result = grouped_auroc_ci(np.zeros(y.shape[0], dtype=np.int64), y, score, 1, level)
    return AurocInterval(float(result.auroc[0]), float(result.lo[0]), float(result.hi[0]))


def auroc(label: Any, score: Any) -> float:
    """AUROC of `score` for the 0/1 `label` (ties count one half, as scikit-learn); NaN if one
    class only or a NaN score."""
    return float(auroc_ci(label, score).auroc)
