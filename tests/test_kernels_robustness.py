"""Robust Accuracy, flip rate and their bootstrap intervals from joint (label, clean, perturbed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ubsafe.kernels import (
    bootstrap_robustness,
    flip_rate,
    joint_counts,
    robust_accuracy,
    robustness_counts,
)


def perturbed_rows(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.4).astype(np.int8)
    clean = np.where(rng.random(n) < 0.85, label, 1 - label).astype(np.int8)
    perturbed = np.where(rng.random(n) < 0.8, clean, 1 - clean).astype(np.int8)
    return label, clean, perturbed


def test_counts_and_rates_follow_their_definitions() -> None:
    label, clean, pert = perturbed_rows(6000, seed=1)
    group = np.random.default_rng(2).integers(0, 5, 6000)
    joint = joint_counts(group, label, clean, pert, n_groups=5)
    counts = robustness_counts(joint)
    ra = robust_accuracy(joint)
    flips = flip_rate(joint)
    for g in range(5):
        sel = group == g
        correct = sel & (clean == label)
        still = correct & (pert == label)
        flipped = sel & (clean != pert)
        assert counts[g].tolist() == [sel.sum(), correct.sum(), still.sum(), flipped.sum()]
        assert ra[g] == pytest.approx(still.sum() / correct.sum())
        assert flips[g] == pytest.approx(flipped.sum() / sel.sum())


def test_undefined_cases() -> None:
    # Group 0 empty; group 1 with no clean-correct row (RA undefined, flip rate defined).
    joint = np.zeros((2, 8), dtype=np.int64)
    joint[1, 4 * 1 + 2 * 0 + 1] = 3  # label 1, clean 0 (wrong), perturbed 1
    assert np.isnan(robust_accuracy(joint)).all()
    assert robust_accuracy(joint, zero_division=0.0)[1] == 0.0
    assert math.isnan(flip_rate(joint)[0]) and flip_rate(joint)[1] == 1.0
    ci = bootstrap_robustness(joint, [1, 2], n_boot=200)
    assert np.isnan(ci["robust_accuracy"][0]).all()
    assert ci["flip_rate"][0][1] == 1.0 and ci["flip_rate"][1][1] == 1.0


def test_intervals_match_scipy_bootstrap_of_rows() -> None:
    n = 1200
    label, clean, pert = perturbed_rows(n, seed=3)
    joint = joint_counts(np.zeros(n, dtype=np.int64), label, clean, pert, 1)
    ours = bootstrap_robustness(joint, [77], n_boot=10_000)

    def statistics(y: np.ndarray, c: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
        correct = c == y
        ra = np.sum(correct & (p == y), axis=axis) / np.sum(correct, axis=axis)
        return np.stack([ra, np.mean(c != p, axis=axis)])

    ref = stats.bootstrap(
        (label, clean, pert),
        statistics,
        paired=True,
        vectorized=True,
        n_resamples=10_000,
        batch=1000,
        method="percentile",
        rng=np.random.default_rng(4),
    )
    tol = 5 * 0.038 * ref.standard_error + 1.0 / n
    for m, name in enumerate(("robust_accuracy", "flip_rate")):
        assert abs(ours[name][0][0] - ref.confidence_interval.low[m]) < tol[m], name
        assert abs(ours[name][1][0] - ref.confidence_interval.high[m]) < tol[m], name
