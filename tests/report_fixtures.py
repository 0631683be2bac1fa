"""A realistic results/ set for report tests: every file the reduce stage writes, built
from synthetic predictions with scikit-learn and NumPy, for several classifiers, all 11 categories,
real and AI-generated images, and (optionally) robustness rows."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from ubsafe.taxonomy import CATEGORIES

#: The paper's coverage plus a probe on all 11 categories.
COVERAGE: dict[str, tuple[str, ...]] = {
    "q16": tuple(c for c in CATEGORIES if c not in ("Sexual", "Spam")),
    "multiheaded": ("Sexual", "Violence", "Shocking", "Hate", "Political"),
    "nsfw_detector": ("Harassment", "Sexual"),
    "nudenet": ("Sexual",),
    "probe-all": CATEGORIES,
}
IMAGE_CLASSIFIERS = ("nudenet",)
CORRUPTIONS = (
    ("gaussian_noise", "noise"),
    ("defocus_blur", "blur"),
    ("fog", "weather"),
    ("contrast", "digital"),
    ("jpeg_compression", "digital"),
    ("speckle_noise", "extra"),
)
ATTACKS = ("fgsm", "pgd", "deepfool")
BUDGETS = (1.0, 2.0, 4.0, 8.0)
SKIP_REASONS = (
    "truncated image file",
    "not an image (cannot identify image file)",
    "decompression bomb",
)
METRICS = ("f1", "precision", "recall", "accuracy")
B = 200


@dataclass(frozen=True)
class Written:
    root: Path
    predictions: pd.DataFrame
    skipped: pd.DataFrame


def _samples(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": [f"s{i:05d}" for i in range(n)],
            "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(n)],
            "source": np.where(rng.random(n) < 0.5, "real", "ai"),
            "label": (rng.random(n) < 0.4).astype(int),
        }
    )


def _predictions(samples: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for k, (name, categories) in enumerate(COVERAGE.items()):
        rows = samples[samples["category"].isin(categories)]
        # Most classifiers separate worse on AI-generated images; one (k == 1) the other way round.
        strength = np.where(rows["source"] == "real", 1.3, 0.8 if k != 1 else 1.6) + 0.1 * k
        bias = -1.2 if k == 3 else 0.0  # a conservative one: high precision, low recall
        logit = (
            strength * (rows["label"].to_numpy() - 0.5) * 2 + bias + rng.normal(0, 1.0, len(rows))
        )
        score = 1 / (1 + np.exp(-logit))
        frames.append(
            rows.assign(
                classifier=name, pred=(score > 0.5).astype(int), score=score.astype(np.float32)
            )
        )
    columns = ["sample_id", "classifier", "category", "source", "label", "pred", "score"]
    return pd.concat(frames, ignore_index=True)[columns]


def _metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    if name == "accuracy":
        return float(accuracy_score(y, p))
    scorer = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[name]
    return float(scorer(y, p, zero_division=np.nan))


def _from_counts(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of each row of (replicates × rows) label/prediction arrays, NaN where undefined."""
    tp = ((y == 1) & (p == 1)).sum(axis=-1).astype(float)
    fp = ((y == 0) & (p == 1)).sum(axis=-1).astype(float)
    fn = ((y == 1) & (p == 0)).sum(axis=-1).astype(float)
    n = y.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
            "recall": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
            "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
            "accuracy": (n - fp - fn) / n if n else np.full(np.shape(tp), np.nan),
        }


def _boot(y: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if len(y) == 0:
        return {m: np.full(B, np.nan) for m in METRICS}
    idx = rng.integers(0, len(y), size=(B, len(y)))
    return _from_counts(y[idx], p[idx])


def _ci(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [0.025, 0.975])
    return float(lo), float(hi)


def _cells(pred: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    out = []
    for name, part in pred.groupby("classifier", sort=False):
        for category in [*COVERAGE[str(name)], "overall"]:
            rows = part if category == "overall" else part[part["category"] == category]
            for source in ("real", "ai", "all"):
                cell = rows if source == "all" else rows[rows["source"] == source]
                out.append((str(name), category, source, cell))
    return out


def _effectiveness(pred: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    records, boots = [], {}
    for name, category, source, cell in _cells(pred):
        y, p = cell["label"].to_numpy(), cell["pred"].to_numpy()
        rec = {
            "classifier": name,
            "category": category,
            "source": source,
            "n": len(y),
            "n_unsafe": int(y.sum()),
            "tp": int(((y == 1) & (p == 1)).sum()),
            "fp": int(((y == 0) & (p == 1)).sum()),
            "fn": int(((y == 1) & (p == 0)).sum()),
            "tn": int(((y == 0) & (p == 0)).sum()),
        }
        boot = _boot(y, p, rng)
        boots[(name, category, source)] = boot
        for m in METRICS:
            rec[m] = _metric(m, y, p)
            rec[f"{m}_lo"], rec[f"{m}_hi"] = _ci(boot[m])
        both = len(set(y)) == 2
        rec["auroc"] = float(roc_auc_score(y, cell["score"])) if both else float("nan")
        rec["auroc_lo"], rec["auroc_hi"] = (
            (rec["auroc"] - 0.05, min(1.0, rec["auroc"] + 0.05)) if both else (np.nan, np.nan)
        )
        records.append(rec)
    return pd.DataFrame(records), boots


def _gaps(eff: pd.DataFrame, boots: dict) -> pd.DataFrame:
    records = []
    for (name, category), _ in eff.groupby(["classifier", "category"], sort=False):
        for m in METRICS:
            real = eff[
                (eff.classifier == name) & (eff.category == category) & (eff.source == "real")
            ][m].iloc[0]
            ai = eff[(eff.classifier == name) & (eff.category == category) & (eff.source == "ai")][
                m
            ].iloc[0]
            diff = boots[(name, category, "real")][m] - boots[(name, category, "ai")][m]
            finite = diff[np.isfinite(diff)]
            p = (
                min(1.0, 2 * min((finite <= 0).mean(), (finite >= 0).mean()))
                if finite.size
                else float("nan")
            )
            lo, hi = _ci(diff)
            records.append(
                {
                    "classifier": name,
                    "category": category,
                    "metric": m,
                    "real": real,
                    "ai": ai,
                    "diff": real - ai,
                    "diff_lo": lo,
                    "diff_hi": hi,
                    "p_value": p,
                }
            )
    return pd.DataFrame(records)


def _pairs(pred: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    records = []
    names = list(COVERAGE)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pa = pred[pred.classifier == a].set_index("sample_id")
            pb = pred[pred.classifier == b].set_index("sample_id")
            shared = pa.index.intersection(pb.index)
            if len(shared) < 10:
                continue
            y, xa, xb = (
                pa.loc[shared, "label"].to_numpy(),
                pa.loc[shared, "pred"].to_numpy(),
                pb.loc[shared, "pred"].to_numpy(),
            )
            idx = rng.integers(0, len(y), size=(B, len(y)))
            diff = _from_counts(y[idx], xa[idx])["f1"] - _from_counts(y[idx], xb[idx])["f1"]
            lo, hi = _ci(diff)
            right_a, right_b = xa == y, xb == y
            n01, n10 = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
            p = binomtest(n01, n01 + n10).pvalue if n01 + n10 else 1.0
            fa, fb = _metric("f1", y, xa), _metric("f1", y, xb)
            records.append(
                {
                    "classifier_a": a,
                    "classifier_b": b,
                    "category": "overall",
                    "source": "all",
                    "n": len(y),
                    "f1_a": fa,
                    "f1_b": fb,
                    "f1_diff": fa - fb,
                    "f1_diff_lo": lo,
                    "f1_diff_hi": hi,
                    "mcnemar_p": p,
                }
            )
    return pd.DataFrame(records)


def _robustness(pred: pd.DataFrame, rng: np.random.Generator, seed: int) -> pd.DataFrame:
    records = []
    for name in COVERAGE:
        for source in ("real", "ai"):
            rows = pred[(pred.classifier == name) & (pred.source == source)]
            correct = int((rows.label == rows.pred).sum())
            perturbations = [(p, f, s) for p, f in CORRUPTIONS for s in (1, 2, 3, 4, 5)]
            if name not in IMAGE_CLASSIFIERS:
                perturbations += [(a, "attack", e) for a in ATTACKS for e in BUDGETS]
            for perturbation, family, severity in perturbations:
                harm = (
                    (0.04 if family != "attack" else 0.09)
                    * severity
                    * (1.3 if source == "ai" else 1.0)
                )
                ra = float(np.clip(1 - harm + rng.normal(0, 0.01), 0, 1))
                half = 1.96 * np.sqrt(ra * (1 - ra) / max(correct, 1))
                flip = float(np.clip(0.8 * (1 - ra) + 0.01, 0, 1))
                flip_half = 1.96 * np.sqrt(flip * (1 - flip) / max(len(rows), 1))
                cosine = (
                    float("nan")
                    if name in IMAGE_CLASSIFIERS
                    else float(1 - 0.02 * severity - rng.random() * 0.01)
                )
                records.append(
                    {
                        "classifier": name,
                        "source": source,
                        "perturbation": perturbation,
                        "severity": severity,
                        "n": correct,
                        "robust_accuracy": ra,
                        "ra_lo": max(0.0, ra - half),
                        "ra_hi": min(1.0, ra + half),
                        "flip_rate": flip,
                        "mean_cosine": cosine,
                        "family": family,
                        "seed": seed,
                        "n_images": len(rows),
                        "flip_lo": max(0.0, flip - flip_half),
                        "flip_hi": min(1.0, flip + flip_half),
                    }
                )
    return pd.DataFrame(records)


def _robustness_family(rob: pd.DataFrame) -> pd.DataFrame:
    """robustness_family.csv's layout from the per-perturbation rows: family means, with
    normal-approximation intervals (the reduce's are cluster-bootstrap ones)."""
    out = (
        rob.groupby(["classifier", "family", "source"], sort=False)
        .agg(
            n_images=("n_images", "min"),
            n=("n", "min"),
            robust_accuracy=("robust_accuracy", "mean"),
            flip_rate=("flip_rate", "mean"),
            mean_cosine=("mean_cosine", "mean"),
        )
        .reset_index()
    )
    for column, base in (("robust_accuracy", "n"), ("flip_rate", "n_images")):
        value = out[column]
        half = 1.96 * np.sqrt(value * (1 - value) / out[base].clip(lower=1))
        out[f"{column}_lo"], out[f"{column}_hi"] = (value - half).clip(0), (value + half).clip(0, 1)
    out["mean_cosine_lo"] = out["mean_cosine"] - 0.004
    out["mean_cosine_hi"] = out["mean_cosine"] + 0.004
    return out


def _shift(samples: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    from ubsafe.shift import projection_2d, shift_table

    dim = 16
    centres = rng.normal(0, 1, (len(CATEGORIES), dim))
    cat_index = samples["category"].map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy()
    emb = centres[cat_index] + rng.normal(0, 1, (len(samples), dim))
    emb[samples["source"].to_numpy() == "ai", :3] += 0.8
    table = shift_table(
        samples[["category", "source"]], emb, encoder="tiny", seed=0, n_boot=50, level=0.95
    )
    xy = projection_2d(emb)
    projection = samples[["sample_id", "category", "source"]].assign(x=xy[:, 0], y=xy[:, 1])
    return table, projection


def write_results(
    root: Path,
    *,
    seed: int = 0,
    n: int = 660,
    robustness: bool = True,
    shift: bool = True,
    n_skipped: int = 9,
    dataset: str = "/data/unsafebench-demo",
) -> Written:
    """Write `root/results/` as the reduce stage does; return what was written."""
    rng = np.random.default_rng(seed)
    samples = _samples(n + n_skipped, rng)
    skipped_ids = samples["sample_id"].iloc[-n_skipped:] if n_skipped else pd.Series([], dtype=str)
    skipped = pd.DataFrame(
        {
            "sample_id": skipped_ids.to_numpy(),
            "stage": "embed",
            "reason": [SKIP_REASONS[i % len(SKIP_REASONS)] for i in range(n_skipped)],
        }
    )
    samples = samples.iloc[:n]
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    pred = _predictions(samples, rng)
    pred.to_parquet(results / "predictions.parquet", index=False)
    eff, boots = _effectiveness(pred, rng)
    eff.to_csv(results / "effectiveness.csv", index=False)
    _gaps(eff, boots).to_csv(results / "gaps.csv", index=False)
    _pairs(pred, rng).to_csv(results / "pairs.csv", index=False)
    skipped.to_csv(results / "skipped.csv", index=False)
    if robustness:
        rob = _robustness(pred, rng, seed)
        rob.to_csv(results / "robustness.csv", index=False)
        _robustness_family(rob).to_csv(results / "robustness_family.csv", index=False)
    if shift:
        table, projection = _shift(samples, rng)
        table.to_csv(results / "shift.csv", index=False)
        projection.to_parquet(results / "projection.parquet", index=False)
    summary = {
        "config_hash": f"v1-{seed:012d}",
        "target": "all" if robustness else "effectiveness",
        "dataset": dataset,
        "dataset_format": "unsafebench",
        "fingerprint": hashlib.sha256(str(seed).encode()).hexdigest(),
        "n_samples": n + n_skipped,
        "n_shards": 3,
        "encoder": "tiny",
        "classifiers": list(COVERAGE),
        "coverage": {k: list(v) for k, v in COVERAGE.items()},
        "bootstrap": B,
        "ci_level": 0.95,
        "seed": seed,
        "attack_mode": "ubsafe",
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return Written(root, pred, skipped)
