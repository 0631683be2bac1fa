"""How far AI-generated images sit from real ones in the encoder's embedding space.

Per category, and `overall` (every row), on the run's cached clean embeddings of its own encoder:

- `frechet`: the Fréchet distance between Gaussians fitted to the real and the AI-generated
  embeddings (the FID formula): ``|mu_r - mu_a|² + tr(S_r) + tr(S_a) - 2 tr((S_r^½ S_a S_r^½)^½)``
  with sample covariances (ddof 1).
- `mmd`: the unbiased estimate of the squared maximum mean discrepancy (Gretton et al. 2012, the
  U-statistic of their eq. 3) with the Gaussian kernel ``k(x, y) = exp(-|x - y|² / (2 h²))``. The
  bandwidth h is one number per run: the median Euclidean distance between pairs of the run's
  embeddings (real and AI pooled; a seeded sample of `BANDWIDTH_ROWS` rows when there are more), so
  values are comparable across categories and bootstrap replicates vary the sample, not the kernel.
  Being unbiased it can be slightly negative when there is no shift.

Embeddings are L2-normalised first: encoders differ in norm, and the CLIP classifiers judge by
angle.

Intervals come from a two-sample bootstrap: real and AI-generated rows are resampled independently,
with replacement, as one multinomial draw of counts each; both metrics use the same draws, seeded
from (config seed, category name), so a category's interval does not depend on which other
categories exist, on row order or on the shard layout. The interval is the percentile interval moved
so that the replicates' median sits on the estimate, ``[v - (q_50 - q_lo), v + (q_hi - q_50)]``:
the Fréchet distance is biased upwards in finite samples, and a resample (with its repeated rows)
more so, which would put a plain percentile interval above the estimate. The interval so shows how
much the estimate varies between samples of this size; it does not remove that bias (compare
categories of similar size; MMD² answers whether there is a shift at all). The Fréchet interval is
clipped at 0. On a resample, MMD² leaves out pairs of copies of the same row (the kernel of a row
with itself is 1 and would fake similarity), which keeps the resampled statistic unbiased for the
sample's.

Both statistics on a resample are computed from the counts without copying rows: the Fréchet trace
term as the nuclear norm of a small cross product of centred rows, the MMD as quadratic forms of the
kernel matrix, built block by block so memory stays flat.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ubsafe import atomic
from ubsafe.results import result_file
from ubsafe.taxonomy import CATEGORIES, OVERALL

if TYPE_CHECKING:
    from ubsafe.rundir import Run

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("frechet", "mmd")
SHIFT_COLUMNS: tuple[str, ...] = result_file("shift.csv").names
PROJECTION_COLUMNS: tuple[str, ...] = result_file("projection.parquet").names

#: Bootstrap replicates for the shift (the config's `bootstrap`, capped): a Fréchet replicate costs
#: a factorisation and an SVD of up to dim × dim (about 0.5 s at dim 768 on one core), so 10,000 of
#: them on a full UnsafeBench pool would take hours; 200 put the 95 % interval ends within about 0.2
#: bootstrap standard deviations of where infinitely many would (Monte Carlo error).
SHIFT_REPLICATES = 200
#: Rows sampled to pick the MMD bandwidth (median of pairwise distances).
BANDWIDTH_ROWS = 2000
#: Kernel rows computed at once (memory: BLOCK_ROWS × rows × 8 bytes).
BLOCK_ROWS = 1024
#: Significant digits written to shift.csv: far beyond the bootstrap's precision, and short enough
#: that floating-point noise from BLAS threading never shows in the file.
CSV_FLOAT_FORMAT = "%.8g"


# --- the statistics -------------------------------------------------------------------------


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float64 (an all-zero row stays zero)."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings must be 2-D with the same width, got {a.shape} and {b.shape}")


def _centred_factor(x: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, C) of the multiset repeating row i counts[i] times; C.T @ C is its covariance."""
    total = counts.sum()
    mean = counts @ x / total
    keep = counts > 0
    factor = (x[keep] - mean) * np.sqrt(counts[keep] / (total - 1))[:, None]
    if factor.shape[0] > factor.shape[1]:
        # A square factor with the same C.T @ C, so later products cost dim², not rows × dim:
        # Cholesky of the covariance (fast), or QR of the rows when the covariance is singular.
        try:
            factor = np.linalg.cholesky(factor.T @ factor).T
        except np.linalg.LinAlgError:
            factor = np.linalg.qr(factor, mode="r")
    return mean, factor


def frechet_from_counts(
    a: np.ndarray, b: np.ndarray, count_a: np.ndarray, count_b: np.ndarray
) -> float:
    """The Fréchet distance between the multisets that repeat row i of `a` (`b`) `count_a[i]` times.

    With C_a.T @ C_a = S_a, the eigenvalues of S_a S_b are the squared singular values of
    C_a @ C_b.T, so the trace of the matrix square root is that product's nuclear norm: no dim × dim
    square root, and no negative eigenvalues from round-off.
    """
    _check_pair(a, b)
    count_a = np.asarray(count_a, dtype=np.float64)
    count_b = np.asarray(count_b, dtype=np.float64)
    if count_a.sum() < 2 or count_b.sum() < 2:
        return float("nan")
    mean_a, factor_a = _centred_factor(a, count_a)
    mean_b, factor_b = _centred_factor(b, count_b)
    cross = np.linalg.svd(factor_a @ factor_b.T, compute_uv=False).sum()
    mean_term = float(np.sum((mean_a - mean_b) ** 2))
    trace_term = float(np.sum(factor_a**2) + np.sum(factor_b**2) - 2.0 * cross)
    return mean_term + trace_term


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of `a` and `b` (NaN below 2 rows)."""
    return frechet_from_counts(a, b, np.ones(len(a)), np.ones(len(b)))


def median_bandwidth(
    x: np.ndarray, *, max_rows: int = BANDWIDTH_ROWS, seed: int | Sequence[int] = 0
) -> float:
    """Median Euclidean distance between distinct rows of `x` (a seeded sample of `max_rows`)."""
    from scipy.spatial.distance import pdist

    x = np.asarray(x, dtype=np.float64)
    if len(x) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), size=max_rows, replace=False))
        x = x[rows]
    distances = pdist(x)
    positive = distances[distances > 0]
    if positive.size == 0:
        raise ValueError("cannot choose an MMD bandwidth: all embeddings are identical")
    return float(np.median(positive))


def _kernel_block(x: np.ndarray, y: np.ndarray, bandwidth: float) -> np.ndarray:
    sq = np.sum(x**2, axis=1)[:, None] + np.sum(y**2, axis=1)[None, :] - 2.0 * (x @ y.T)
    return np.exp(-np.maximum(sq, 0.0) / (2.0 * bandwidth**2))


def _within(forms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean kernel over pairs of distinct rows of a multiset, from w.T K w (K is 1 on its diagonal).

    Pairs of copies of one row are left out: Σ w_i² of them, each contributing 1.
    """
    total, same = counts.sum(axis=0), (counts**2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((forms - same) / (total**2 - same))


def mmd_from_counts_batch(
    a: np.ndarray,
    b: np.ndarray,
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    bandwidth: float,
    *,
    block_rows: int = BLOCK_ROWS,
) -> np.ndarray:
    """MMD² on resamples: for each row of `counts_a` / `counts_b` (replicates × rows), the multiset
    repeating row i counts[i] times, pairs of copies of one row left out of the within-set means.

    With counts of one this is `mmd`. Each replicate is three quadratic forms of one kernel matrix,
    built once, block by block, for all replicates. NaN where a side has fewer than 2 distinct rows.
    """
    _check_pair(a, b)
    wa = np.atleast_2d(np.asarray(counts_a, dtype=np.float64)).T  # rows × replicates
    wb = np.atleast_2d(np.asarray(counts_b, dtype=np.float64)).T
    aa, bb, ab = np.zeros(wa.shape[1]), np.zeros(wa.shape[1]), np.zeros(wa.shape[1])
    for start in range(0, len(a), block_rows):
        rows = slice(start, start + block_rows)
        aa += np.einsum("ik,ik->k", wa[rows], _kernel_block(a[rows], a, bandwidth) @ wa)
        ab += np.einsum("ik,ik->k", wa[rows], _kernel_block(a[rows], b, bandwidth) @ wb)
    for start in range(0, len(b), block_rows):
        rows = slice(start, start + block_rows)
        bb += np.einsum("ik,ik->k", wb[rows], _kernel_block(b[rows], b, bandwidth) @ wb)
    between = ab / (wa.sum(axis=0) * wb.sum(axis=0))
    result = _within(aa, wa) + _within(bb, wb) - 2.0 * between
    result[((wa > 0).sum(axis=0) < 2) | ((wb > 0).sum(axis=0) < 2)] = np.nan
    return np.asarray(result)


def mmd_from_counts(
    a: np.ndarray, b: np.ndarray, count_a: np.ndarray, count_b: np.ndarray, bandwidth: float
) -> float:
    """MMD² on one resample given as counts per row (see `mmd_from_counts_batch`)."""
    return float(mmd_from_counts_batch(a, b, count_a[None, :], count_b[None, :], bandwidth)[0])


def mmd(a: np.ndarray, b: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD² of `a` vs `b`, Gaussian kernel of `bandwidth` (NaN below 2 rows each)."""
    return mmd_from_counts(a, b, np.ones(len(a)), np.ones(len(b)), bandwidth)


# --- the bootstrap --------------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftEstimate:
    """A statistic on the full sample, its bootstrap interval and the bootstrap replicates."""

    value: float
    lo: float
    hi: float
    replicates: np.ndarray


def stable_id(name: str) -> int:
    """A 64-bit integer from a name, the same in every process (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def resample_counts(rng: np.random.Generator, n_rows: int, n_boot: int) -> np.ndarray:
    """`n_boot` resamples with replacement of `n_rows` rows, as counts (n_boot × n_rows)."""
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot)


def centred_interval(value: float, replicates: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of the finite replicates moved so their median sits on `value`:
    ``[value - (q_50 - q_lo), value + (q_hi - q_50)]``, q at (1 ∓ level) / 2 (NaN without any)."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0 or not np.isfinite(value):
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    q_lo, q_mid, q_hi = np.quantile(finite, [alpha, 0.5, 1.0 - alpha])
    return float(value - (q_mid - q_lo)), float(value + (q_hi - q_mid))


def bootstrap_shift(
    real: np.ndarray,
    ai: np.ndarray,
    *,
    bandwidth: float,
    n_boot: int,
    seed: int | Sequence[int],
    level: float = 0.95,
) -> dict[str, ShiftEstimate]:
    """Fréchet distance and MMD² of `real` vs `ai` with two-sample bootstrap intervals (see
    `centred_interval`).

    The same `seed` gives the same draws; rows of `real` and of `ai` are resampled independently.
    The Fréchet interval is clipped at 0. With fewer than 2 rows on a side every number is NaN.
    """
    _check_pair(real, ai)
    nan = float("nan")
    if len(real) < 2 or len(ai) < 2:
        empty = np.full(0, np.nan)
        return {metric: ShiftEstimate(nan, nan, nan, empty) for metric in METRICS}
    rng = np.random.default_rng(seed)
    counts_real = resample_counts(rng, len(real), n_boot)
    counts_ai = resample_counts(rng, len(ai), n_boot)
    pairs = zip(counts_real, counts_ai, strict=True)
    replicates = {
        "frechet": np.array([frechet_from_counts(real, ai, cr, ca) for cr, ca in pairs]),
        "mmd": mmd_from_counts_batch(real, ai, counts_real, counts_ai, bandwidth),
    }
    values = {"frechet": frechet_distance(real, ai), "mmd": mmd(real, ai, bandwidth)}
    out = {}
    for metric in METRICS:
        lo, hi = centred_interval(values[metric], replicates[metric], level)
        if metric == "frechet":
            lo, hi = max(lo, 0.0), max(hi, 0.0)
        out[metric] = ShiftEstimate(values[metric], lo, hi, replicates[metric])
    return out


# --- the table and the projection ------------------------------------------------------------


def one_blas_thread() -> Any:
    """A context with one BLAS thread: the same bits whatever the machine's thread count, and the
    bootstrap's many small factorisations run faster without threading overhead."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def category_order(categories: Sequence[str]) -> list[str]:
    """The taxonomy's categories present, in its order, then any others sorted, then `overall`."""
    present = set(categories)
    known = [c for c in CATEGORIES if c in present]
    return [*known, *sorted(present - set(CATEGORIES) - {OVERALL}), OVERALL]


def shift_table(
    rows: pd.DataFrame,
    embeddings: np.ndarray,
    *,
    encoder: str,
    seed: int,
    n_boot: int,
    level: float,
) -> pd.DataFrame:
    """shift.csv's rows: per category and `overall`, both metrics, real vs AI-generated.

    `rows` gives each embedding row's `category` and `source` (`real` or `ai`); `embeddings` are raw
    (they are L2-normalised here).
    """
    with one_blas_thread():
        return _shift_table(
            rows, embeddings, encoder=encoder, seed=seed, n_boot=n_boot, level=level
        )


def _shift_table(
    rows: pd.DataFrame,
    embeddings: np.ndarray,
    *,
    encoder: str,
    seed: int,
    n_boot: int,
    level: float,
) -> pd.DataFrame:
    x = normalise(embeddings)
    category = rows["category"].to_numpy()
    source = rows["source"].to_numpy()
    bandwidth = median_bandwidth(x, seed=[seed, stable_id("mmd-bandwidth")])
    records = []
    for name in category_order(list(np.unique(category))):
        in_category = np.ones(len(x), bool) if name == OVERALL else category == name
        real, ai = x[in_category & (source == "real")], x[in_category & (source == "ai")]
        estimates = bootstrap_shift(
            real, ai, bandwidth=bandwidth, n_boot=n_boot, seed=[seed, stable_id(name)], level=level
        )
        for metric in METRICS:
            est = estimates[metric]
            records.append((name, metric, est.value, est.lo, est.hi, len(real), len(ai), encoder))
    return pd.DataFrame.from_records(records, columns=list(SHIFT_COLUMNS))


def projection_2d(embeddings: np.ndarray) -> np.ndarray:
    """The first two principal components of the L2-normalised rows (n × 2).

    Each axis's sign is fixed so that its loading of largest magnitude is positive, which makes the
    figure the same on every machine.
    """
    x = normalise(embeddings)
    centred = x - x.mean(axis=0)
    with one_blas_thread():
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    coords = centred @ axes.T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


# --- the run ---------------------------------------------------------------------------------


def shift_path(run: Run) -> Path:
    return run.results_dir / "shift.csv"


def projection_path(run: Run) -> Path:
    return run.results_dir / "projection.parquet"


def _embedded_rows(run: Run, cache_key: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The plan rows that have a clean embedding (skipped images have none), sorted by sample id."""
    from ubsafe.embeddings import load_all

    ids, matrix = load_all(run, cache_key, "clean")
    plan = run.plan.set_index("sample_id")
    order = np.argsort(ids.astype(str), kind="stable")
    ids, matrix = ids[order], matrix[order]
    meta = plan.loc[list(ids), ["category", "source_kind"]]
    rows = pd.DataFrame(
        {
            "sample_id": ids.astype(str),
            "category": meta["category"].to_numpy(),
            "source": meta["source_kind"].to_numpy(),
        }
    )
    return rows, matrix


def write_shift(run: Run, *, cache_key: str | None = None) -> Path | None:
    """Write results/shift.csv and results/projection.parquet; None when there is no real/AI pair.

    Reads the cached clean embeddings of the run's encoder (`cache_key` defaults to its cache key);
    nothing is re-encoded. Every shard file is checked before any is read.
    """
    kinds = set(run.plan["source_kind"].unique())
    if not {"real", "ai"} <= kinds:
        log.info(
            "shift: the run has %s images only; no real-vs-AI comparison", "/".join(sorted(kinds))
        )
        return None
    if cache_key is None:
        from ubsafe.stages.embed import cache_key as encoder_cache_key

        cache_key = encoder_cache_key(run, run.config.encoder)
    rows, matrix = _embedded_rows(run, cache_key)
    if not {"real", "ai"} <= set(rows["source"]):
        log.info("shift: every image of one source was skipped; no real-vs-AI comparison")
        return None
    config = run.config
    table = shift_table(
        rows,
        matrix,
        encoder=config.encoder,
        seed=config.seed,
        n_boot=min(config.bootstrap, SHIFT_REPLICATES),
        level=config.ci_level,
    )
    coords = projection_2d(matrix)
    projection = rows.assign(x=coords[:, 0], y=coords[:, 1])[list(PROJECTION_COLUMNS)]
    with atomic.atomic_path(projection_path(run)) as tmp:
        projection.to_parquet(tmp, index=False)
    path = shift_path(run)
    from ubsafe.escape import csv_frame

    atomic.write_text(
        path,
        csv_frame(table).to_csv(index=False, float_format=CSV_FLOAT_FORMAT, lineterminator="\n"),
    )
    return path
