"""Bootstrap CIs for a whole effectiveness table at UnsafeBench size, against scipy.stats.bootstrap.

The table: 10,146 rows over the 11 categories (~40 % unsafe, real and AI-generated halves); each
classifier's cells are its covered categories in the paper plus `overall` (their pool), for sources
real, ai and all; metrics F1, precision, recall, accuracy; B = 10,000 percentile intervals at 95 %.

ubsafe's time covers what the reduce stage does: count the confusion cells from the rows, then the
multinomial bootstrap of every cell. scipy's gets the same rows of every cell and one vectorised
call per cell that returns all four metrics (its fastest use). Both run here, in this process.

    PYTHONPATH=. python bench/bench_bootstrap.py [--n-boot 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import header

from ubsafe.kernels import (
    METRICS,
    bootstrap_ci,
    confusion_counts,
    group_seeds,
    point_metrics,
)
from ubsafe.taxonomy import CATEGORIES

#: Covered categories per classifier in the paper.
COVERAGE: dict[str, tuple[str, ...]] = {
    "q16": tuple(c for c in CATEGORIES if c not in ("Sexual", "Spam")),
    "multiheaded": ("Sexual", "Violence", "Shocking", "Hate", "Political"),
    "sd_filter": ("Sexual",),
    "nsfw_detector": ("Harassment", "Sexual"),
    "nudenet": ("Sexual",),
}
SOURCES = ("real", "ai")
#: Test-split (unsafe, total) per category of UnsafeBench, scaled to 10,146 rows.
SPLIT = {
    "Sexual": (150, 211), "Shocking": (114, 231), "Harassment": (40, 187), "Violence": (79, 193),
    "Self-harm": (29, 199), "Hate": (29, 199), "Public and personal health": (55, 155),
    "Deception": (50, 163), "Political": (91, 167), "Illegal activity": (88, 172),
    "Spam": (52, 160),
}  # fmt: skip
N_ROWS = 10_146
T = TypeVar("T")


def synthetic_rows(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """category index, source index (0 real, 1 ai), label, and each classifier's predictions."""
    rng = np.random.default_rng(seed)
    totals = np.array([SPLIT[c][1] for c in CATEGORIES], dtype=float)
    category = rng.choice(len(CATEGORIES), size=N_ROWS, p=totals / totals.sum())
    source = rng.integers(0, 2, N_ROWS)
    unsafe_rate = np.array([SPLIT[c][0] / SPLIT[c][1] for c in CATEGORIES])[category]
    label = (rng.random(N_ROWS) < unsafe_rate).astype(np.int8)
    predictions = {}
    for name in COVERAGE:
        # Recall and false-positive rate per (category, source); AI-generated images fare worse.
        recall = rng.uniform(0.35, 0.9, (len(CATEGORIES), 2)) - [0.0, 0.1]
        fpr = rng.uniform(0.03, 0.25, (len(CATEGORIES), 2))
        p_unsafe = np.where(label == 1, recall[category, source], fpr[category, source])
        predictions[name] = (rng.random(N_ROWS) < p_unsafe).astype(np.int8)
    return category, source, label, predictions


def table_cells() -> list[tuple[str, str, str]]:
    cells = []
    for name, covered in COVERAGE.items():
        for cat in (*covered, "overall"):
            for src in (*SOURCES, "all"):
                cells.append((name, cat, src))
    return cells


def cell_rows(cell: tuple[str, str, str], category: np.ndarray, source: np.ndarray) -> np.ndarray:
    name, cat, src = cell
    covered = [CATEGORIES.index(c) for c in (COVERAGE[name] if cat == "overall" else (cat,))]
    mask = np.isin(category, covered)
    if src != "all":
        mask &= source == SOURCES.index(src)
    return mask


def ubsafe_table(
    category: np.ndarray,
    source: np.ndarray,
    label: np.ndarray,
    predictions: dict[str, np.ndarray],
    seeds: np.ndarray,
    n_boot: int,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Counts per (category, source) from rows, pooled into the table's cells, then all CIs."""
    fine = category * 2 + source
    rows = []
    for name, covered in COVERAGE.items():
        counts = confusion_counts(fine, label, predictions[name], 2 * len(CATEGORIES))
        counts = counts.reshape(len(CATEGORIES), 2, 4)
        idx = [CATEGORIES.index(c) for c in covered]
        per_cat = [counts[i] for i in idx] + [counts[idx].sum(axis=0)]  # ..., overall
        for block in per_cat:
            rows += [block[0], block[1], block.sum(axis=0)]  # real, ai, all
    table = np.array(rows)
    return point_metrics(table), bootstrap_ci(table, seeds, n_boot=n_boot)


def _scipy_metrics(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    """F1, precision, recall, accuracy of 0/1 rows along `axis` (zero_division = 0), vectorised."""
    tp = np.sum(y & p, axis=axis)
    fp = np.sum(p, axis=axis) - tp
    fn = np.sum(y, axis=axis) - tp
    n = y.shape[axis]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
    return np.stack([f1, precision, recall, (n - fp - fn) / n])


def scipy_table(
    cells: list[tuple[str, str, str]],
    category: np.ndarray,
    source: np.ndarray,
    label: np.ndarray,
    predictions: dict[str, np.ndarray],
    n_boot: int,
    per_metric: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scipy's percentile intervals and bootstrap standard errors for `cells`: one call per (cell,
    metric) with a scalar statistic (the documented use), or one call per cell for all four."""
    from scipy import stats

    lo = np.full((len(cells), len(METRICS)), np.nan)
    hi = np.full_like(lo, np.nan)
    se = np.full_like(lo, np.nan)
    rng = np.random.default_rng(12345)
    for i, cell in enumerate(cells):
        mask = cell_rows(cell, category, source)
        y, p = label[mask], predictions[cell[0]][mask]
        batch = max(1, min(n_boot, 20_000_000 // y.size))  # bounded memory
        statistics = (
            [(m, lambda y, p, axis=-1, m=m: _scipy_metrics(y, p, axis)[m]) for m in range(4)]
            if per_metric
            else [(slice(None), _scipy_metrics)]
        )
        for where, statistic in statistics:
            result = stats.bootstrap(
                (y, p),
                statistic,
                paired=True,
                vectorized=True,
                n_resamples=n_boot,
                batch=batch,
                method="percentile",
                rng=rng,
            )
            lo[i, where] = result.confidence_interval.low
            hi[i, where] = result.confidence_interval.high
            se[i, where] = result.standard_error
    return lo, hi, se


def _timed(func: Callable[[], T]) -> tuple[T, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = func()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument(
        "--scipy-every",
        type=int,
        default=1,
        help="run scipy on every k-th cell only and scale its time by rows (default: all cells)",
    )
    args = parser.parse_args()

    header("bootstrap CIs for an UnsafeBench-size effectiveness table")
    category, source, label, predictions = synthetic_rows(args.seed)
    cells = table_cells()
    seeds = group_seeds(args.seed, cells)
    print(
        f"   {N_ROWS} rows ({label.mean():.0%} unsafe), {len(cells)} cells "
        f"({len(COVERAGE)} classifiers x (covered categories + overall) x 3 sources), "
        f"{len(METRICS)} metrics, B = {args.n_boot}, 95 % percentile intervals"
    )

    def ours_run() -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return ubsafe_table(category, source, label, predictions, seeds, args.n_boot)[1]

    head = {name: pred[:50] for name, pred in predictions.items()}
    _, warm_s, _ = _timed(
        lambda: ubsafe_table(category[:50], source[:50], label[:50], head, seeds, 10)
    )
    print(f"   JIT warm-up (compile, or load from numba's cache): {warm_s:.1f} s")
    ours, _, _ = _timed(ours_run)
    runs = [_timed(ours_run) for _ in range(args.repeat)]
    ours_wall = min(r[1] for r in runs)
    ours_cpu = min(r[2] for r in runs)

    subset = list(range(0, len(cells), args.scipy_every))
    rows_all = sum(cell_rows(c, category, source).sum() for c in cells)
    rows_subset = sum(cell_rows(cells[i], category, source).sum() for i in subset)
    scale = rows_all / rows_subset
    picked = [cells[i] for i in subset]
    print(
        f"   ubsafe: {ours_wall * 1e3:7.1f} ms wall, {ours_cpu * 1e3:7.1f} ms CPU "
        f"(best of {args.repeat}; counts + multinomial bootstrap)   goal: well under 1 s"
    )
    for per_metric, label_text in (
        (True, "one call per cell and metric"),
        (False, "one call per cell, 4 metrics"),
    ):
        (ref_lo, ref_hi, ref_se), wall, cpu = _timed(
            lambda per_metric=per_metric: scipy_table(
                picked, category, source, label, predictions, args.n_boot, per_metric
            )
        )
        wall, cpu = wall * scale, cpu * scale
        ours_lo = np.stack([ours[m][0][subset] for m in METRICS], 1)
        ours_hi = np.stack([ours[m][1][subset] for m in METRICS], 1)
        diff = np.maximum(np.abs(ours_lo - ref_lo), np.abs(ours_hi - ref_hi))
        # Monte-Carlo standard error of the difference of two independent 2.5 % quantile
        # estimates from B replicates of a near-normal bootstrap distribution with this SD.
        mc_se = np.sqrt(2 * 0.025 * 0.975 / args.n_boot) / 0.0584 * ref_se
        note = "" if args.scipy_every == 1 else f" (every {args.scipy_every}th cell, scaled)"
        print(f"   scipy.stats.bootstrap, {label_text}{note}: {wall:7.1f} s wall, {cpu:7.1f} s CPU")
        print(
            f"      ratio {wall / ours_wall:,.0f}x wall, {cpu / ours_cpu:,.0f}x CPU   goal >= 500x"
        )
        print(
            f"      interval ends differ by <= {diff.max():.4f} (median {np.median(diff):.4f}; "
            f"at most {np.max(diff / mc_se):.1f} Monte-Carlo standard errors)   goal <= 0.005"
        )


if __name__ == "__main__":
    main()
