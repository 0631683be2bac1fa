"""Confusion cells per group and the point metrics, against scikit-learn."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from ubsafe.kernels import (
    confusion_counts,
    joint_counts,
    point_metrics,
    split_joint,
)

SKLEARN = {
    "f1": f1_score,
    "precision": precision_score,
    "recall": recall_score,
}


def sklearn_metrics(label: np.ndarray, pred: np.ndarray, zero_division: float) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        out = {
            name: float(fn(label, pred, zero_division=zero_division, pos_label=1))
            for name, fn in SKLEARN.items()
        }
    out["accuracy"] = float(accuracy_score(label, pred))
    return out


def random_rows(n: int, n_groups: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, n)
    label = (rng.random(n) < 0.4).astype(np.int8)
    pred = np.where(rng.random(n) < 0.8, label, 1 - label).astype(np.int8)
    return group, label, pred


def test_counts_match_sklearn_confusion_matrix_per_group() -> None:
    group, label, pred = random_rows(5000, 7, seed=1)
    counts = confusion_counts(group, label, pred, n_groups=9)
    assert counts.shape == (9, 4) and counts.dtype == np.int64
    for g in range(7):
        tn, fp, fn, tp = confusion_matrix(
            label[group == g], pred[group == g], labels=[0, 1]
        ).ravel()
        assert counts[g].tolist() == [tp, fp, fn, tn]
    assert counts[7:].sum() == 0  # groups without rows


def test_joint_counts_match_a_direct_tabulation() -> None:
    group, label, pred_a = random_rows(3000, 4, seed=2)
    pred_b = np.where(np.random.default_rng(3).random(3000) < 0.9, pred_a, 1 - pred_a)
    joint = joint_counts(group, label, pred_a, pred_b, n_groups=4)
    for g in range(4):
        sel = group == g
        for y in (0, 1):
            for a in (0, 1):
                for b in (0, 1):
                    n = np.sum(sel & (label == y) & (pred_a == a) & (pred_b == b))
                    assert joint[g, 4 * y + 2 * a + b] == n
    counts_a, counts_b = split_joint(joint)
    np.testing.assert_array_equal(counts_a, confusion_counts(group, label, pred_a, 4))
    np.testing.assert_array_equal(counts_b, confusion_counts(group, label, pred_b, 4))


@pytest.mark.parametrize("zero_division", [0.0, 1.0, math.nan])
def test_point_metrics_match_sklearn_on_random_groups(zero_division: float) -> None:
    group, label, pred = random_rows(4000, 6, seed=4)
    metrics = point_metrics(confusion_counts(group, label, pred, 6), zero_division)
    for g in range(6):
        expected = sklearn_metrics(label[group == g], pred[group == g], zero_division)
        for name, value in expected.items():
            assert metrics[name][g] == pytest.approx(value, rel=1e-12)


EDGE_CASES = {
    "no true positives, some false": ([1, 1, 0, 0], [0, 0, 1, 0]),
    "no predicted positives": ([1, 0, 0, 0], [0, 0, 0, 0]),
    "no positive labels": ([0, 0, 0, 0], [0, 1, 0, 0]),
    "all negative, all correct": ([0, 0, 0], [0, 0, 0]),
    "all positive, all correct": ([1, 1], [1, 1]),
    "single row": ([1], [0]),
}


@pytest.mark.parametrize("zero_division", [0.0, 1.0, math.nan])
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_zero_division_edge_cases_match_sklearn(case: str, zero_division: float) -> None:
    label, pred = (np.array(v, dtype=np.int8) for v in EDGE_CASES[case])
    counts = confusion_counts(np.zeros(label.size, dtype=np.int64), label, pred, 1)
    got = point_metrics(counts, zero_division)
    for name, value in sklearn_metrics(label, pred, zero_division).items():
        assert got[name][0] == pytest.approx(value, nan_ok=True), name


def test_empty_group_has_no_estimate() -> None:
    with pytest.raises(ValueError, match="empty"):
        f1_score(np.array([], dtype=int), np.array([], dtype=int))  # sklearn refuses empty input
    for zero_division in (0.0, 1.0):
        metrics = point_metrics(np.zeros((1, 4), dtype=np.int64), zero_division)
        assert all(math.isnan(v[0]) for v in metrics.values())


def test_bad_rows_are_refused_with_row_and_value() -> None:
    group, label, pred = np.zeros(3, dtype=int), np.array([0, 1, 2]), np.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"row 2: group=0, label=2, pred=1"):
        confusion_counts(group, label, pred, 1)
    with pytest.raises(ValueError, match=r"row 1: group=5"):
        confusion_counts([0, 5], [0, 1], [0, 1], 2)
    with pytest.raises(ValueError, match="row 0 has value 257"):
        confusion_counts([0], np.array([257], dtype=np.int16), [1], 1)  # would wrap to 1 as int8
    with pytest.raises(TypeError, match="expected integers"):
        confusion_counts([0], [0.7], [1], 1)
    with pytest.raises(ValueError, match="label=3, pred=2"):
        confusion_counts([0], [3], [2], 1)


def test_mismatched_lengths_and_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="group=2, label=1, pred=2"):
        confusion_counts([0, 0], [1], [1, 0], 1)
    with pytest.raises(ValueError, match=r"zero_division=0\.5"):
        point_metrics(np.ones((1, 4), dtype=np.int64), zero_division=0.5)
    with pytest.raises(ValueError, match="negative cell count"):
        point_metrics(np.array([[1, -1, 0, 0]]))
    with pytest.raises(ValueError, match=r"shape \(n_groups, 4\)"):
        point_metrics(np.ones((2, 3), dtype=np.int64))
