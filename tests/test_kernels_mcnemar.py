"""McNemar's exact test against scipy.stats.binomtest."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ubsafe.kernels import discordant_counts, joint_counts, mcnemar


def joint_with_discordant(a_only: int, b_only: int, both: int = 10) -> np.ndarray:
    joint = np.zeros(8, dtype=np.int64)
    joint[4 * 1 + 2 * 1 + 0] = a_only  # label 1: a right, b wrong
    joint[4 * 0 + 2 * 1 + 0] = b_only  # label 0: a wrong, b right
    joint[4 * 1 + 2 * 1 + 1] = both  # concordant rows do not enter
    return joint


PAIRS = [(0, 1), (1, 0), (3, 3), (5, 1), (1, 9), (10, 12), (40, 17), (250, 300), (2500, 2600),
         (0, 60), (700, 1400)]  # fmt: skip


@pytest.mark.parametrize(("a_only", "b_only"), PAIRS)
def test_p_value_matches_scipy_binomtest(a_only: int, b_only: int) -> None:
    p = mcnemar(joint_with_discordant(a_only, b_only)[None, :])[0]
    expected = stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert p == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_no_discordant_rows_gives_one() -> None:
    assert mcnemar(joint_with_discordant(0, 0)[None, :])[0] == 1.0


def test_discordant_rows_from_predictions() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 500)
    pred_a = np.where(rng.random(500) < 0.8, label, 1 - label)
    pred_b = np.where(rng.random(500) < 0.7, label, 1 - label)
    joint = joint_counts(np.zeros(500, dtype=np.int64), label, pred_a, pred_b, 1)
    a_right, b_right = pred_a == label, pred_b == label
    only_a, only_b = int(np.sum(a_right & ~b_right)), int(np.sum(~a_right & b_right))
    assert discordant_counts(joint)[0].tolist() == [only_a, only_b]
    assert mcnemar(joint)[0] == pytest.approx(stats.binomtest(only_a, only_a + only_b).pvalue)
