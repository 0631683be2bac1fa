"""robustness_family.csv: family means of Robust Accuracy, flip rate and drift with intervals,
against a plain NumPy bootstrap that resamples images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ubsafe.config import RunConfig
from ubsafe.metrics import family_from_rows

N_IMAGES, B = 240, 4000
VARIANTS = (("gaussian_noise", 1), ("gaussian_noise", 3), ("shot_noise", 2))


def synthetic_rows(seed: int = 0) -> pd.DataFrame:
    """One image's clean decision is the same under every perturbation, as in real runs."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, N_IMAGES)
    clean = np.where(rng.random(N_IMAGES) < 0.8, label, 1 - label)
    fragile = (rng.random(N_IMAGES) < 0.25).astype(float)  # these flip under everything
    parts = []
    for perturbation, severity in VARIANTS:
        flips = rng.random(N_IMAGES) < 0.3 * severity * fragile
        parts.append(
            pd.DataFrame(
                {
                    "sample_id": [f"s{i:04d}" for i in range(N_IMAGES)],
                    "classifier": "probe-all",
                    "perturbation": perturbation,
                    "family": "noise",
                    "severity": float(severity),
                    "seed": 0,
                    "pred_clean": clean,
                    "pred": np.where(flips, 1 - clean, clean),
                    "cosine": 1.0 - 0.05 * severity * fragile - rng.uniform(0, 0.01, N_IMAGES),
                    "label": label,
                    "source": np.where(np.arange(N_IMAGES) % 3 == 0, "ai", "real"),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


STATISTICS = {  # column → (numerator, denominator) of one row
    "robust_accuracy": (
        lambda r: (r.pred_clean == r.label) & (r.pred == r.label),
        lambda r: r.pred_clean == r.label,
    ),
    "flip_rate": (lambda r: r.pred != r.pred_clean, lambda r: np.ones(len(r), bool)),
    "mean_cosine": (lambda r: r.cosine, lambda r: np.ones(len(r), bool)),
}


def image_bootstrap(rows: pd.DataFrame, column: str, seed: int = 1) -> tuple[float, float]:
    """Percentile interval of Σ numerator / Σ denominator, resampling images (NumPy draws)."""
    num_of, den_of = STATISTICS[column]
    codes, _ = pd.factorize(rows["sample_id"])
    num = np.bincount(codes, weights=np.asarray(num_of(rows), float))
    den = np.bincount(codes, weights=np.asarray(den_of(rows), float))
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(num), size=(B, len(num)))
    values = num[drawn].sum(axis=1) / den[drawn].sum(axis=1)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def statistic(rows: pd.DataFrame, column: str) -> float:
    num_of, den_of = STATISTICS[column]
    return float(np.sum(num_of(rows)) / np.sum(den_of(rows)))


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return synthetic_rows()


@pytest.fixture(scope="module")
def family(rows: pd.DataFrame) -> pd.DataFrame:
    config = RunConfig(classifiers=("probe-all",), bootstrap=B, seed=3)
    return family_from_rows(rows, config).set_index(["classifier", "family", "source"])


@pytest.mark.parametrize("source", ["real", "ai", "all"])
@pytest.mark.parametrize("column", sorted(STATISTICS))
def test_family_values_and_intervals_match_an_image_bootstrap(
    rows: pd.DataFrame, family: pd.DataFrame, source: str, column: str
) -> None:
    part = rows if source == "all" else rows[rows["source"] == source]
    got = family.loc[("probe-all", "noise", source)]
    # the value: with the same images under every perturbation, the plain mean of per-variant values
    per_variant = [statistic(v, column) for _, v in part.groupby(["perturbation", "severity"])]
    assert got[column] == pytest.approx(np.mean(per_variant), abs=1e-12)
    lo, hi = image_bootstrap(part, column)
    width = hi - lo
    assert width > 0
    # two Monte Carlo estimates of the same percentiles agree to a small share of the width
    assert got[f"{column}_lo"] == pytest.approx(lo, abs=0.12 * width)
    assert got[f"{column}_hi"] == pytest.approx(hi, abs=0.12 * width)
    assert got["n_images"] == part["sample_id"].nunique()


def test_an_interval_is_wider_than_if_the_perturbations_were_independent(
    rows: pd.DataFrame, family: pd.DataFrame
) -> None:
    """Resampling images keeps an image's outcomes together: fragile images flip under every
    perturbation, so the family's interval is wider than pooling the rows as independent."""
    got = family.loc[("probe-all", "noise", "all")]
    p = got["flip_rate"]
    independent = 2 * 1.96 * np.sqrt(p * (1 - p) / len(rows))
    assert got["flip_rate_hi"] - got["flip_rate_lo"] > 1.2 * independent
