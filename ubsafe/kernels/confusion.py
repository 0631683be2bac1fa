"""Confusion cells per group, and the metrics that are functions of them.

Cell layouts (unsafe = positive = 1):

- `confusion_counts` → (G, 4) columns `tp, fp, fn, tn` (`CELLS`).
- `joint_counts` → (G, 8) for two predictions of the same rows (two classifiers, or clean and
  perturbed), column `4*label + 2*pred_a + pred_b` (`JOINT_CELLS`), e.g. column 6 counts rows with
  label 1, pred_a 1, pred_b 0.

Metrics follow scikit-learn (`f1_score`, `precision_score`, `recall_score`, `accuracy_score`
with `pos_label=1`): precision = tp/(tp+fp), recall = tp/(tp+fn), F1 = 2tp/(2tp+fp+fn), and a
metric whose denominator is zero takes the value `zero_division` (0.0, 1.0 or nan). An empty group
has no estimate: every metric is NaN (scikit-learn refuses empty input).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ubsafe.kernels._jit import helper, kernel
from ubsafe.kernels._validate import (
    as_1d,
    counts_arg,
    n_groups_arg,
    same_length,
    zero_division_arg,
)

CELLS: tuple[str, ...] = ("tp", "fp", "fn", "tn")
JOINT_CELLS: tuple[str, ...] = tuple(
    f"y{label}_a{a}_b{b}" for label in (0, 1) for a in (0, 1) for b in (0, 1)
)
#: The confusion metrics every table reports, in the order the kernels compute them.
METRICS: tuple[str, ...] = ("f1", "precision", "recall", "accuracy")


@helper
def cell_metrics(tp: int, fp: int, fn: int, tn: int, zero_division: float) -> tuple[float, ...]:
    """(f1, precision, recall, accuracy) from one group's cells, with scikit-learn's rules."""
    n = tp + fp + fn + tn
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    precision = tp / (tp + fp) if tp + fp > 0 else zero_division
    recall = tp / (tp + fn) if tp + fn > 0 else zero_division
    f1 = 2.0 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else zero_division
    return f1, precision, recall, (tp + tn) / n


@helper
def joint_to_cells(j: np.ndarray) -> tuple[int, int, int, int, int, int, int, int]:
    """(tp, fp, fn, tn) of prediction a, then of prediction b, from one row of joint cells."""
    return (
        j[6] + j[7],
        j[2] + j[3],
        j[4] + j[5],
        j[0] + j[1],
        j[5] + j[7],
        j[1] + j[3],
        j[4] + j[6],
        j[0] + j[2],
    )


@kernel()
def _count_kernel(
    group: np.ndarray, label: np.ndarray, pred: np.ndarray, n_groups: int, out: np.ndarray
) -> int:
    # Returns the first invalid row, or -1.
    for i in range(group.shape[0]):
        g, y, p = group[i], label[i], pred[i]
        if g < 0 or g >= n_groups or (y != 0 and y != 1) or (p != 0 and p != 1):
            return i
        out[g, 3 - 2 * p - y] += 1
    return -1


@kernel()
def _joint_kernel(
    group: np.ndarray,
    label: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_groups: int,
    out: np.ndarray,
) -> int:
    for i in range(group.shape[0]):
        g, y, a, b = group[i], label[i], pred_a[i], pred_b[i]
        if g < 0 or g >= n_groups or (y != 0 and y != 1) or (a != 0 and a != 1):
            return i
        if b != 0 and b != 1:
            return i
        out[g, 4 * y + 2 * a + b] += 1
    return -1


@kernel()
def _point_kernel(counts: np.ndarray, zero_division: float, out: np.ndarray) -> None:
    for g in range(counts.shape[0]):
        values = cell_metrics(counts[g, 0], counts[g, 1], counts[g, 2], counts[g, 3], zero_division)
        for m in range(4):
            out[m, g] = values[m]


def _bad_row(row: int, n_groups: int, **columns: NDArray[Any]) -> ValueError:
    values = ", ".join(f"{name}={arr[row]}" for name, arr in columns.items())
    return ValueError(
        f"row {row}: {values}: labels and predictions must be 0 or 1 (unsafe = 1) and groups in "
        f"[0, {n_groups}); map labels with ubsafe.taxonomy.SAFETY_LABELS and number groups first"
    )


def confusion_counts(group: Any, label: Any, pred: Any, n_groups: int) -> NDArray[np.int64]:
    """Count (tp, fp, fn, tn) per group: an int64 array of shape (n_groups, 4).

    `group` holds each row's group index in [0, n_groups); `label` and `pred` are 0/1 with unsafe
    as the positive class. Groups without rows get zero counts.
    """
    g = as_1d("group", group, np.int64)
    y = as_1d("label", label, np.int8)
    p = as_1d("pred", pred, np.int8)
    same_length(group=g, label=y, pred=p)
    n_groups = n_groups_arg(n_groups)
    out = np.zeros((n_groups, 4), dtype=np.int64)
    bad = _count_kernel(g, y, p, n_groups, out)
    if bad >= 0:
        raise _bad_row(bad, n_groups, group=g, label=y, pred=p)
    return out


def joint_counts(
    group: Any, label: Any, pred_a: Any, pred_b: Any, n_groups: int
) -> NDArray[np.int64]:
    """Count the 8 joint cells of (label, pred_a, pred_b) per group: shape (n_groups, 8).

    Column `4*label + 2*pred_a + pred_b`. Use it for two classifiers on the same rows and for
    clean (a) against perturbed (b) predictions of one classifier.
    """
    g = as_1d("group", group, np.int64)
    y = as_1d("label", label, np.int8)
    a = as_1d("pred_a", pred_a, np.int8)
    b = as_1d("pred_b", pred_b, np.int8)
    same_length(group=g, label=y, pred_a=a, pred_b=b)
    n_groups = n_groups_arg(n_groups)
    out = np.zeros((n_groups, 8), dtype=np.int64)
    bad = _joint_kernel(g, y, a, b, n_groups, out)
    if bad >= 0:
        raise _bad_row(bad, n_groups, group=g, label=y, pred_a=a, pred_b=b)
    return out


def split_joint(joint: Any) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The (tp, fp, fn, tn) counts of prediction a and of prediction b from joint cells."""
    j = counts_arg("joint", joint, 8)
    a = np.stack([j[:, 6] + j[:, 7], j[:, 2] + j[:, 3], j[:, 4] + j[:, 5], j[:, 0] + j[:, 1]], 1)
    b = np.stack([j[:, 5] + j[:, 7], j[:, 1] + j[:, 3], j[:, 4] + j[:, 6], j[:, 0] + j[:, 2]], 1)
    return a, b


def binary_metrics(labels: Any, preds: Any, zero_division: float = 0.0) -> dict[str, float]:
    """F1, precision, recall and accuracy of one set of 0/1 decisions (1 = unsafe = positive), by
    the same rule as every table (NaN for no samples)."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(preds).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} predictions")
    cells = [(y & p).sum(), (~y & p).sum(), (y & ~p).sum(), (~y & ~p).sum()]
    metrics = point_metrics(np.asarray([cells], dtype=np.int64), zero_division)
    return {name: float(values[0]) for name, values in metrics.items()}


def point_metrics(counts: Any, zero_division: float = 0.0) -> dict[str, NDArray[np.float64]]:
    """F1, precision, recall and accuracy per group from (G, 4) counts (tp, fp, fn, tn)."""
    c = counts_arg("counts", counts, 4)
    out = np.empty((len(METRICS), c.shape[0]), dtype=np.float64)
    _point_kernel(c, zero_division_arg(zero_division), out)
    return {name: out[m] for m, name in enumerate(METRICS)}
