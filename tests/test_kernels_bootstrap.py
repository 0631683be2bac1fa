"""The multinomial bootstrap: agreement with scipy.stats.bootstrap, reproducibility, edge cases."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ubsafe.kernels import (
    METRICS,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_gap,
    bootstrap_paired,
    confusion_counts,
    joint_counts,
    point_metrics,
)
from ubsafe.kernels.bootstrap import percentile_interval

ROOT = Path(__file__).resolve().parents[1]
B = 10_000


def metric_rows(label: np.ndarray, pred: np.ndarray, axis: int = -1) -> np.ndarray:
    """F1, precision, recall, accuracy of row-level arrays along `axis` (zero_division = 0)."""
    tp = np.sum((label == 1) & (pred == 1), axis=axis)
    fp = np.sum((label == 0) & (pred == 1), axis=axis)
    fn = np.sum((label == 1) & (pred == 0), axis=axis)
    n = label.shape[axis]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
    accuracy = np.sum(label == pred, axis=axis) / n
    return np.stack([f1, precision, recall, accuracy])


def rows(n: int, prevalence: float, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < prevalence).astype(np.int8)
    pred = np.where(rng.random(n) < accuracy, label, 1 - label).astype(np.int8)
    return label, pred


def mc_tolerance(sd: np.ndarray, n: int) -> np.ndarray:
    """Five Monte-Carlo standard errors of the difference of two 2.5 % quantile estimates from
    B = 10,000 replicates each (≈ 0.038 sd for a normal shape), plus one step of the lattice."""
    return 5 * 0.038 * sd + 1.0 / n


@pytest.mark.parametrize(("n", "prevalence", "accuracy"), [(400, 0.4, 0.8), (2000, 0.1, 0.9)])
def test_intervals_match_scipy_bootstrap(n: int, prevalence: float, accuracy: float) -> None:
    label, pred = rows(n, prevalence, accuracy, seed=n)
    counts = confusion_counts(np.zeros(n, dtype=np.int64), label, pred, 1)
    ours = bootstrap_ci(counts, seeds=[123], n_boot=B)
    ref = stats.bootstrap(
        (label, pred),
        metric_rows,
        paired=True,
        vectorized=True,
        n_resamples=B,
        batch=1000,
        method="percentile",
        rng=np.random.default_rng(7),
    )
    sd = ref.standard_error
    tol = mc_tolerance(sd, n)
    for m, name in enumerate(METRICS):
        lo, hi = ours[name][0][0], ours[name][1][0]
        assert abs(lo - ref.confidence_interval.low[m]) < tol[m], name
        assert abs(hi - ref.confidence_interval.high[m]) < tol[m], name
    # Same spread as the row bootstrap (SE of an SD from 10,000 replicates ≈ 0.7 %).
    ours_sd = bootstrap_distribution(counts, [123], n_boot=B)[0].std(axis=1, ddof=1)
    np.testing.assert_allclose(ours_sd, sd, rtol=0.05)


def test_gap_matches_scipy_two_sample_bootstrap() -> None:
    label_a, pred_a = rows(900, 0.35, 0.85, seed=1)
    label_b, pred_b = rows(700, 0.45, 0.75, seed=2)
    counts_a = confusion_counts(np.zeros(900, dtype=np.int64), label_a, pred_a, 1)
    counts_b = confusion_counts(np.zeros(700, dtype=np.int64), label_b, pred_b, 1)
    ours = bootstrap_gap(counts_a, counts_b, seeds=[99], n_boot=B)

    # scipy resamples each sample of a two-sample statistic independently (paired=False); rows are
    # carried as one integer code per row, 2*label + pred.
    def difference(code_a: np.ndarray, code_b: np.ndarray, axis: int = -1) -> np.ndarray:
        a = metric_rows(code_a // 2, code_a % 2, axis)
        b = metric_rows(code_b // 2, code_b % 2, axis)
        return a - b

    ref = stats.bootstrap(
        (2 * label_a + pred_a, 2 * label_b + pred_b),
        difference,
        paired=False,
        vectorized=True,
        n_resamples=B,
        batch=1000,
        method="percentile",
        rng=np.random.default_rng(8),
    )
    tol = mc_tolerance(ref.standard_error, 700)
    expected_value = metric_rows(label_a, pred_a) - metric_rows(label_b, pred_b)
    for m, name in enumerate(METRICS):
        result = ours[name]
        assert result.value[0] == pytest.approx(expected_value[m])
        assert abs(result.lo[0] - ref.confidence_interval.low[m]) < tol[m], name
        assert abs(result.hi[0] - ref.confidence_interval.high[m]) < tol[m], name


def test_paired_matches_scipy_paired_bootstrap() -> None:
    rng = np.random.default_rng(11)
    n = 1500
    label, pred_a = rows(n, 0.4, 0.85, seed=12)
    # b agrees with a on most rows, so the paired interval is much tighter than an unpaired one.
    pred_b = np.where(rng.random(n) < 0.93, pred_a, 1 - pred_a).astype(np.int8)
    joint = joint_counts(np.zeros(n, dtype=np.int64), label, pred_a, pred_b, 1)
    ours = bootstrap_paired(joint, seeds=[5], n_boot=B)

    def difference(y: np.ndarray, a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return metric_rows(y, a, axis) - metric_rows(y, b, axis)

    ref = stats.bootstrap(
        (label, pred_a, pred_b),
        difference,
        paired=True,
        vectorized=True,
        n_resamples=B,
        batch=1000,
        method="percentile",
        rng=np.random.default_rng(9),
    )
    tol = mc_tolerance(ref.standard_error, n)
    for m, name in enumerate(METRICS):
        assert abs(ours[name].lo[0] - ref.confidence_interval.low[m]) < tol[m], name
        assert abs(ours[name].hi[0] - ref.confidence_interval.high[m]) < tol[m], name
    unpaired = bootstrap_gap(
        *np.split(
            np.vstack(
                [
                    confusion_counts(np.zeros(n, dtype=np.int64), label, pred_a, 1),
                    confusion_counts(np.zeros(n, dtype=np.int64), label, pred_b, 1),
                ]
            ),
            2,
        ),
        seeds=[5],
        n_boot=B,
    )
    f1_width = ours["f1"].hi[0] - ours["f1"].lo[0]
    assert f1_width < 0.6 * (unpaired["f1"].hi[0] - unpaired["f1"].lo[0])


def test_percentile_intervals_cover_the_truth_at_the_nominal_rate() -> None:
    # 400 simulated data sets from a known population: a 90 % interval should cover ~90 %.
    rng = np.random.default_rng(21)
    p_cells = np.array([0.25, 0.05, 0.10, 0.60])  # tp, fp, fn, tn
    truth = point_metrics(np.round(p_cells * 1e9).astype(np.int64)[None, :])
    counts = rng.multinomial(300, p_cells, size=400)
    intervals = bootstrap_ci(counts, np.arange(400), n_boot=2000, level=0.90)
    for name in ("accuracy", "f1"):
        lo, hi = intervals[name]
        coverage = np.mean((lo <= truth[name][0]) & (truth[name][0] <= hi))
        assert 0.85 < coverage < 0.95, (name, coverage)


def test_a_group_does_not_depend_on_the_other_groups() -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 300, size=(12, 4))
    seeds = rng.integers(0, 2**63, size=12).astype(np.uint64)
    together = bootstrap_ci(counts, seeds, n_boot=2000)
    order = rng.permutation(12)
    shuffled = bootstrap_ci(counts[order], seeds[order], n_boot=2000)
    alone = bootstrap_ci(counts[4:5], seeds[4:5], n_boot=2000)
    for name in METRICS:
        np.testing.assert_array_equal(shuffled[name][0], together[name][0][order])
        np.testing.assert_array_equal(shuffled[name][1], together[name][1][order])
        assert alone[name][0][0] == together[name][0][4]
        assert alone[name][1][0] == together[name][1][4]


def test_seeds_drive_the_result() -> None:
    counts = np.array([[40, 10, 15, 135]])
    a = bootstrap_distribution(counts, [1], n_boot=500)
    np.testing.assert_array_equal(a, bootstrap_distribution(counts, [1], n_boot=500))
    assert not np.array_equal(a, bootstrap_distribution(counts, [2], n_boot=500))
    # More replicates extend the same sequence: replicate b depends on (seed, b) only.
    np.testing.assert_array_equal(a, bootstrap_distribution(counts, [1], n_boot=800)[:, :, :500])


_THREADS_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numba, numpy as np
    from ubsafe.kernels import (bootstrap_ci, bootstrap_distribution, bootstrap_gap,
                                bootstrap_paired, bootstrap_robustness)
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 400, size=(9, 4))
    joint = rng.integers(0, 200, size=(9, 8))
    seeds = rng.integers(0, 2**63, size=9).astype(np.uint64)
    parts = [bootstrap_distribution(counts, seeds, n_boot=3000)]
    for result in (bootstrap_ci(counts, seeds, n_boot=3000),
                   bootstrap_robustness(joint, seeds, n_boot=3000)):
        parts += [np.stack(v) for v in result.values()]
    for result in (bootstrap_gap(counts, counts[::-1], seeds, n_boot=3000),
                   bootstrap_paired(joint, seeds, n_boot=3000)):
        parts += [np.stack(v) for v in result.values()]
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(p).tobytes() for p in parts))
    print(json.dumps({"threads": numba.get_num_threads(), "digest": digest.hexdigest()}))
    """
)


def test_results_are_identical_for_any_thread_count() -> None:
    results = []
    for threads in (1, 2):
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", _THREADS_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert [r["threads"] for r in results] == [1, 2]
    assert results[0]["digest"] == results[1]["digest"]


def test_empty_groups_are_nan_and_do_not_disturb_others() -> None:
    counts = np.array([[0, 0, 0, 0], [30, 5, 5, 60]])
    result = bootstrap_ci(counts, [1, 2], n_boot=1000)
    for name in METRICS:
        assert math.isnan(result[name][0][0]) and math.isnan(result[name][1][0])
        assert result[name][0][1] <= result[name][1][1]
    gap = bootstrap_gap(counts, counts[::-1], [1, 2], n_boot=500)
    assert np.isnan(gap["f1"].lo).all() and np.isnan(gap["f1"].p_value).all()


def test_zero_division_nan_leaves_undefined_replicates_out() -> None:
    # One positive in 200 rows: many replicates have no positives at all.
    counts = np.array([[1, 0, 0, 199]])
    with_zero = bootstrap_ci(counts, [3], n_boot=4000, zero_division=0.0)
    with_nan = bootstrap_ci(counts, [3], n_boot=4000, zero_division=math.nan)
    assert with_zero["recall"][0][0] == 0.0  # replicates without positives count as 0
    assert with_nan["recall"] == (np.array([1.0]), np.array([1.0]))  # only defined ones: all 1
    # The distribution: NaN exactly where the resample has no positive row.
    dist = bootstrap_distribution(counts, [3], n_boot=4000, zero_division=math.nan)[0]
    no_positive = np.isnan(dist[METRICS.index("recall")])
    assert 0.3 < no_positive.mean() < 0.4  # P(no draw of the one positive) = (199/200)**200 ≈ 0.37


def test_gap_p_value_inverts_the_interval() -> None:
    rng = np.random.default_rng(17)
    counts_a = rng.multinomial(500, [0.3, 0.05, 0.1, 0.55], size=40)
    shift = np.where(np.arange(40)[:, None] < 20, [0.3, 0.05, 0.1, 0.55], [0.2, 0.1, 0.2, 0.5])
    counts_b = np.array([rng.multinomial(500, p) for p in shift])
    gap = bootstrap_gap(counts_a, counts_b, np.arange(40), n_boot=4000, level=0.95)
    for name in METRICS:
        r = gap[name]
        excludes_zero = (r.lo > 0) | (r.hi < 0)
        significant = r.p_value < 0.05
        # Equivalent up to the interpolation between order statistics right at the boundary.
        borderline = np.minimum(np.abs(r.lo), np.abs(r.hi)) < 0.002
        assert np.all((excludes_zero == significant) | borderline), name
        assert ((r.p_value > 0) & (r.p_value <= 1)).all()
    assert (gap["accuracy"].p_value[20:] < 0.05).mean() > 0.8  # a real shift is found


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": [1]}, r"one seed per group \(2\)"),
        ({"seeds": [1, -1]}, "non-negative"),
        ({"seeds": [1, 2], "n_boot": 0}, "n_boot=0"),
        ({"seeds": [1, 2], "level": 95}, "level=95"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        bootstrap_ci(np.ones((2, 4), dtype=np.int64), **kwargs)  # type: ignore[arg-type]


def test_seed_values_above_2_to_63_are_accepted() -> None:
    big = 2**64 - 1
    a = bootstrap_ci(np.array([[10, 2, 3, 30]]), [big], n_boot=300)
    b = bootstrap_ci(np.array([[10, 2, 3, 30]]), np.array([big], dtype=np.uint64), n_boot=300)
    assert a["f1"] == b["f1"]


def test_percentile_interval_matches_numpy_percentile() -> None:
    rng = np.random.default_rng(1)
    for trial in range(400):
        m = int(rng.integers(1, 40)) if trial % 2 else int(rng.integers(1, 5000))
        if trial % 3:  # lattice values with ties, like a bootstrap of counts
            x = rng.integers(0, int(rng.integers(1, 50)), m) / 7.0
        else:
            x = rng.standard_normal(m) * 10.0 ** rng.integers(-8, 8)
        if trial % 5 == 0:
            x[rng.random(m) < 0.3] = np.nan
        q_lo, q_hi = sorted(rng.random(2))
        if trial % 7 == 0:
            q_lo, q_hi = 0.0, 1.0
        before = x.copy()
        lo, hi = percentile_interval(x, q_lo, q_hi)
        np.testing.assert_array_equal(x, before)  # input untouched
        finite = x[~np.isnan(x)]
        if finite.size == 0:
            assert math.isnan(lo) and math.isnan(hi)
            continue
        expected = np.percentile(finite, [100 * q_lo, 100 * q_hi])
        np.testing.assert_allclose([lo, hi], expected, rtol=1e-12, atol=0)


def test_percentile_interval_with_extreme_values() -> None:
    with np.errstate(invalid="ignore"):  # numpy computes inf * 0 for the last one, as we do
        expected = [np.percentile(x, [25, 75]) for x in EXTREMES]
    for x, want in zip(EXTREMES, expected, strict=True):
        np.testing.assert_allclose(percentile_interval(x, 0.25, 0.75), want, rtol=1e-12, atol=0)


EXTREMES = (
    np.array([1.0, 1.0 + 2.0**-52, 1.0, 1.0 + 2.0**-51]),  # a spread of a few ulps
    np.array([5e-324, 0.0, 1e-323]),  # too narrow to bin: sorted instead
    np.array([-np.inf, 0.0, 1.0, 2.0, np.inf]),
)
