"""AUROC against scikit-learn; DeLong intervals against pairwise placements and a row bootstrap."""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from ubsafe.kernels import auroc, auroc_ci, grouped_auroc_ci


def scored_rows(n: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.35).astype(np.int8)
    score = rng.normal(loc=1.2 * label, scale=1.0)
    if ties:
        score = np.round(score * 2) / 2  # heavy ties, as with coarse detector scores
    return label, score


def delong_by_pairs(label: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """DeLong's AUROC and variance from the explicit m × k matrix of pair comparisons."""
    pos, neg = score[label == 1], score[label == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_matches_sklearn(ties: bool) -> None:
    label, score = scored_rows(3000, seed=1, ties=ties)
    assert auroc(label, score) == pytest.approx(roc_auc_score(label, score), rel=1e-12)


def test_grouped_auroc_matches_sklearn_per_group() -> None:
    label, score = scored_rows(6000, seed=2, ties=True)
    group = np.random.default_rng(3).integers(0, 5, 6000)
    result = grouped_auroc_ci(group, label, score, n_groups=5)
    for g in range(5):
        sel = group == g
        assert result.auroc[g] == pytest.approx(roc_auc_score(label[sel], score[sel]), rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_interval_is_delong_from_pairwise_placements(ties: bool) -> None:
    label, score = scored_rows(800, seed=4, ties=ties)
    auc, variance = delong_by_pairs(label, score)
    z = NormalDist().inv_cdf(0.95)
    result = auroc_ci(label, score, level=0.90)
    assert result.auroc == pytest.approx(auc, rel=1e-12)
    assert result.lo == pytest.approx(auc - z * math.sqrt(variance), rel=1e-10)
    assert result.hi == pytest.approx(auc + z * math.sqrt(variance), rel=1e-10)


def test_interval_agrees_with_a_row_bootstrap() -> None:
    label, score = scored_rows(1500, seed=5)
    rng = np.random.default_rng(6)
    idx = rng.integers(0, label.size, size=(4000, label.size))
    y, s = label[idx], score[idx]
    # Mann-Whitney form of the AUROC of each resample (midranks handle ties).
    ranks = stats.rankdata(s, axis=1)
    m = y.sum(axis=1)
    k = label.size - m
    replicates = ((ranks * y).sum(axis=1) - m * (m + 1) / 2) / (m * k)
    assert replicates[0] == pytest.approx(roc_auc_score(y[0], s[0]))
    boot_lo, boot_hi = np.percentile(replicates, [2.5, 97.5])
    result = auroc_ci(label, score)
    width = boot_hi - boot_lo
    assert abs(result.lo - boot_lo) < 0.1 * width
    assert abs(result.hi - boot_hi) < 0.1 * width


def test_undefined_cases_are_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(roc_auc_score([1, 1, 1], [0.1, 0.5, 0.2]))  # sklearn: one class → nan
    assert math.isnan(auroc([1, 1, 1], [0.1, 0.5, 0.2]))
    assert math.isnan(auroc([0, 1, 1], [0.1, np.nan, 0.2]))
    one_negative = auroc_ci([0, 1, 1, 1], [0.1, 0.5, 0.2, 0.7])
    assert one_negative.auroc == 1.0 and math.isnan(one_negative.lo)
    result = grouped_auroc_ci([0, 0, 2, 2], [0, 1, 1, 1], [0.3, 0.4, 0.1, 0.2], n_groups=3)
    assert result.auroc[0] == 1.0
    assert math.isnan(result.auroc[1]) and math.isnan(result.auroc[2])  # empty, one class


def test_perfect_separation_gives_a_degenerate_interval_inside_0_1() -> None:
    label = np.array([0, 0, 0, 1, 1, 1])
    result = auroc_ci(label, label * 2.0 + np.arange(6) * 0.01)
    assert (result.auroc, result.lo, result.hi) == (1.0, 1.0, 1.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="row 1 has label 2"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="group=3, label=2, score=2"):
        grouped_auroc_ci([0, 0, 0], [0, 1], [0.1, 0.2], n_groups=1)
    with pytest.raises(ValueError, match=r"level=1\.5"):
        auroc_ci([0, 1], [0.1, 0.2], level=1.5)
