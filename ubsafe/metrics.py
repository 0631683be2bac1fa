"""Result tables from predictions: effectiveness with CIs, real-vs-AI gaps, classifier pairs,
robustness.

Every group (classifier × category × source, or × perturbation × severity) is counted once into
confusion cells by the Numba kernels; `all` and `overall` cells are sums of the base cells, and
every bootstrap draws from a seed derived from the group's identity (`group_seed`), so a table is
the same for any shard count, thread count, or set of other classifiers in the run. The columns of
every table are its schema in `ubsafe.results`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ubsafe.results import result_file
from ubsafe.taxonomy import ALL_SOURCES, CATEGORIES, OVERALL, SOURCE_KINDS

if TYPE_CHECKING:
    from ubsafe.config import RunConfig
    from ubsafe.rundir import Run

METRICS = ("f1", "precision", "recall", "accuracy")
SOURCES = (*SOURCE_KINDS, ALL_SOURCES)


def category_order(categories: Sequence[str]) -> list[str]:
    """The 11 UnsafeBench categories in the reference order, then any others alphabetically."""
    known = [c for c in CATEGORIES if c in set(categories)]
    return known + sorted(set(categories) - set(CATEGORIES))


def cells(pred: pd.DataFrame, classifiers: Sequence[str]) -> list[tuple[str, str, str]]:
    """(classifier, category, source) for every table row: each covered category plus `overall`."""
    out = []
    for name in classifiers:
        mine = pred[pred["classifier"] == name]
        if mine.empty:
            continue
        for category in [*category_order(list(mine["category"].unique())), OVERALL]:
            out += [(name, category, source) for source in SOURCES]
    return out


def membership(
    pred: pd.DataFrame, table: list[tuple[str, str, str]]
) -> tuple[np.ndarray, np.ndarray]:
    """(row index, group index) pairs: each prediction row belongs to up to four cells."""
    index = {cell: g for g, cell in enumerate(table)}
    classifier = pred["classifier"].to_numpy()
    category = pred["category"].to_numpy()
    source = pred["source"].to_numpy()
    rows_parts, groups_parts = [], []
    for cat_all in (False, True):
        for src_all in (False, True):
            keys = zip(
                classifier,
                np.full(len(pred), OVERALL, object) if cat_all else category,
                np.full(len(pred), ALL_SOURCES, object) if src_all else source,
                strict=True,
            )
            group = np.fromiter((index.get(k, -1) for k in keys), np.int64, len(pred))
            keep = group >= 0
            rows_parts.append(np.flatnonzero(keep))
            groups_parts.append(group[keep])
    return np.concatenate(rows_parts), np.concatenate(groups_parts)


def effectiveness(pred: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """effectiveness.csv: counts, F1/precision/recall/accuracy and AUROC with intervals per cell."""
    from ubsafe.kernels import (
        bootstrap_ci,
        confusion_counts,
        group_seeds,
        grouped_auroc_ci,
        point_metrics,
    )

    table = cells(pred, config.classifiers)
    columns = list(result_file("effectiveness.csv").names)
    if not table:
        return pd.DataFrame(columns=columns)
    rows, groups = membership(pred, table)
    label = pred["label"].to_numpy(np.int8)[rows]
    predicted = pred["pred"].to_numpy(np.int8)[rows]
    counts = confusion_counts(groups, label, predicted, len(table))
    seeds = group_seeds(config.seed, [("effectiveness", *cell) for cell in table])
    point = point_metrics(counts)
    ci = bootstrap_ci(counts, seeds, n_boot=config.bootstrap, level=config.ci_level)
    auc = grouped_auroc_ci(
        groups, label, pred["score"].to_numpy(np.float64)[rows], len(table), config.ci_level
    )
    frame = pd.DataFrame(table, columns=["classifier", "category", "source"])
    frame["n"] = counts.sum(axis=1)
    frame["n_unsafe"] = counts[:, 0] + counts[:, 2]
    for i, name in enumerate(("tp", "fp", "fn", "tn")):
        frame[name] = counts[:, i]
    for metric in METRICS:
        frame[metric] = point[metric]
        frame[f"{metric}_lo"], frame[f"{metric}_hi"] = ci[metric]
    frame["auroc"], frame["auroc_lo"], frame["auroc_hi"] = auc.auroc, auc.lo, auc.hi
    return frame[frame["n"] > 0][columns].reset_index(drop=True)


def gaps(pred: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """gaps.csv: real − AI per (classifier, category) and metric, with bootstrap CI and p-value."""
    from ubsafe.kernels import bootstrap_gap, confusion_counts, group_seeds, point_metrics

    table = [cell for cell in cells(pred, config.classifiers) if cell[2] == ALL_SOURCES]
    columns = list(result_file("gaps.csv").names)
    if not table:
        return pd.DataFrame(columns=columns)
    sided = [(c, cat, src) for c, cat, _ in table for src in SOURCE_KINDS]
    rows, groups = membership(pred, sided)
    label = pred["label"].to_numpy(np.int8)[rows]
    predicted = pred["pred"].to_numpy(np.int8)[rows]
    counts = confusion_counts(groups, label, predicted, len(sided))
    real, ai = counts[0::2], counts[1::2]
    both = (real.sum(axis=1) > 0) & (ai.sum(axis=1) > 0)
    seeds = group_seeds(config.seed, [("gap", c, cat) for c, cat, _ in table])
    diff = bootstrap_gap(real, ai, seeds, n_boot=config.bootstrap, level=config.ci_level)
    p_real, p_ai = point_metrics(real), point_metrics(ai)
    out = []
    for g, (name, category, _) in enumerate(table):
        if not both[g]:
            continue
        for metric in METRICS:
            d = diff[metric]
            out.append(
                (
                    name,
                    category,
                    metric,
                    p_real[metric][g],
                    p_ai[metric][g],
                    d.value[g],
                    d.lo[g],
                    d.hi[g],
                    d.p_value[g],
                )
            )
    return pd.DataFrame(out, columns=columns)


def pairs(pred: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """pairs.csv: two classifiers on the same images — F1 difference with a paired CI, McNemar p."""
    from ubsafe.kernels import (
        bootstrap_paired,
        group_seeds,
        joint_counts,
        mcnemar,
        point_metrics,
        split_joint,
    )

    columns = list(result_file("pairs.csv").names)
    present = [c for c in config.classifiers if (pred["classifier"] == c).any()]
    wide = pred.pivot_table(index="sample_id", columns="classifier", values="pred", aggfunc="first")
    facts = pred.drop_duplicates("sample_id").set_index("sample_id")[
        ["category", "source", "label"]
    ]
    out = []
    for a, b in combinations(present, 2):
        both = wide[[a, b]].dropna()
        if both.empty:
            continue
        f = facts.loc[both.index]
        shared = pd.DataFrame(
            {
                "classifier": f"{a}|{b}",
                "category": f["category"].to_numpy(),
                "source": f["source"].to_numpy(),
                "label": f["label"].to_numpy(np.int8),
            }
        )
        table = cells(shared, [f"{a}|{b}"])
        rows, groups = membership(shared, table)
        joint = joint_counts(
            groups,
            shared["label"].to_numpy(np.int8)[rows],
            both[a].to_numpy(np.int8)[rows],
            both[b].to_numpy(np.int8)[rows],
            len(table),
        )
        seeds = group_seeds(config.seed, [("pair", a, b, cat, src) for _, cat, src in table])
        diff = bootstrap_paired(joint, seeds, n_boot=config.bootstrap, level=config.ci_level)["f1"]
        counts_a, counts_b = split_joint(joint)
        f1_a, f1_b = point_metrics(counts_a)["f1"], point_metrics(counts_b)["f1"]
        p = mcnemar(joint)
        for g, (_, category, source) in enumerate(table):
            n = int(joint[g].sum())
            if n:
                out.append(
                    (
                        a,
                        b,
                        category,
                        source,
                        n,
                        f1_a[g],
                        f1_b[g],
                        diff.value[g],
                        diff.lo[g],
                        diff.hi[g],
                        p[g],
                    )
                )
    return pd.DataFrame(out, columns=columns)


def effectiveness_tables(pred: pd.DataFrame, config: RunConfig) -> dict[str, pd.DataFrame]:
    return {
        "effectiveness": effectiveness(pred, config),
        "gaps": gaps(pred, config),
        "pairs": pairs(pred, config),
    }


ROBUSTNESS_COLUMNS = result_file("robustness.csv").names


def compare_rows(run: Run, shards: Sequence[int]) -> pd.DataFrame | None:
    """Every compare shard's rows with each sample's label and source kind (None: no rows)."""
    from ubsafe import shardfile

    parts = [shardfile.read(run.shard_path("compare", s, "parquet")) for s in shards]
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    rows = pd.concat(parts, ignore_index=True)
    plan = run.plan.set_index("sample_id")
    rows["label"] = plan.loc[rows["sample_id"], "label"].to_numpy(np.int8)
    rows["source"] = plan.loc[rows["sample_id"], "source_kind"].to_numpy()
    return rows


def robustness_table(run: Run, shards: Sequence[int]) -> pd.DataFrame:
    """robustness.csv from the compare shards: Robust Accuracy (of the originally correct), flip
    rate (of all judged images), mean cosine to clean, per (classifier, source, perturbation,
    severity, seed)."""
    rows = compare_rows(run, shards)
    if rows is None:
        return pd.DataFrame(columns=list(ROBUSTNESS_COLUMNS))
    return robustness_from_rows(rows, run.config)


FAMILY_COLUMNS = result_file("robustness_family.csv").names


def robustness_family_table(run: Run, shards: Sequence[int]) -> pd.DataFrame:
    """robustness_family.csv from the compare shards (`family_from_rows`)."""
    rows = compare_rows(run, shards)
    if rows is None:
        return pd.DataFrame(columns=list(FAMILY_COLUMNS))
    return family_from_rows(rows, run.config)


def family_from_rows(rows: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """Per (classifier, family, source): Robust Accuracy, flip rate and mean cosine pooled over
    the family's perturbations, severities and seeds, with cluster-bootstrap intervals.

    An image is one cluster: it carries all its rows of the family (one per perturbation,
    severity and seed), and the bootstrap resamples images, so the correlation of one image's
    outcomes across perturbations widens the interval as it should. Robust Accuracy is
    Σ still correct / Σ correct when clean over the image's rows, the flip rate Σ flipped /
    Σ judged, the drift Σ cosine / Σ rows with a cosine (`ubsafe.kernels.cluster_ratio`). When
    every perturbation sees the same images, the pooled Robust Accuracy is the plain mean of the
    per-perturbation values.
    """
    from ubsafe.kernels import group_seeds
    from ubsafe.kernels.cluster import cluster_ratio, compress_cells

    label = rows["label"].to_numpy(np.int64)
    clean = rows["pred_clean"].to_numpy(np.int64)
    perturbed = rows["pred"].to_numpy(np.int64)
    cosine = rows["cosine"].to_numpy(np.float64)
    per_row = pd.DataFrame(
        {
            "classifier": rows["classifier"].to_numpy(),
            "family": rows["family"].to_numpy(),
            "source": rows["source"].to_numpy(),
            "sample_id": rows["sample_id"].to_numpy(),
            "correct": (clean == label).astype(np.int64),
            "still": ((clean == label) & (perturbed == label)).astype(np.int64),
            "judged": np.ones(len(rows), np.int64),
            "flipped": (clean != perturbed).astype(np.int64),
            "cosine": np.nan_to_num(cosine),
            "with_cosine": np.isfinite(cosine).astype(np.int64),
        }
    )
    order = {name: i for i, name in enumerate(config.classifiers)}
    sums = ["correct", "still", "judged", "flipped", "cosine", "with_cosine"]
    images = []
    for source_all in (False, True):
        part = per_row.assign(source=ALL_SOURCES) if source_all else per_row
        images.append(
            part.groupby(["classifier", "family", "source", "sample_id"], sort=True)[sums]
            .sum()
            .reset_index()
        )
    per_image = pd.concat(images, ignore_index=True)
    table = (
        per_image[["classifier", "family", "source"]]
        .drop_duplicates()
        .assign(
            _c=lambda f: f["classifier"].map(order),
            _s=lambda f: f["source"].map({s: i for i, s in enumerate(SOURCES)}),
        )
        .sort_values(["_c", "classifier", "family", "_s"], kind="stable")
        .drop(columns=["_c", "_s"])
        .reset_index(drop=True)
    )
    index = {tuple(k): g for g, k in enumerate(table.itertuples(index=False))}
    group = np.fromiter(
        (index[k] for k in zip(*(per_image[c] for c in table.columns), strict=True)),
        np.int64,
        len(per_image),
    )
    frame = table.copy()
    frame["n_images"] = np.bincount(group, minlength=len(table))
    frame["n"] = np.bincount(group, weights=per_image["correct"] > 0, minlength=len(table))
    frame["n"] = frame["n"].astype(np.int64)
    names = [tuple(map(str, k)) for k in table.itertuples(index=False)]
    for out, num, den in (
        ("robust_accuracy", "still", "correct"),
        ("flip_rate", "flipped", "judged"),
    ):
        offsets, cells, mult = compress_cells(
            group, per_image[[num, den]].to_numpy(np.int64), len(table)
        )
        seeds = group_seeds(config.seed, [("robustness-family", out, *n) for n in names])
        result = cluster_ratio(
            offsets, cells[:, 0], cells[:, 1], mult, seeds, config.bootstrap, config.ci_level
        )
        frame[out], frame[f"{out}_lo"], frame[f"{out}_hi"] = result.value, result.lo, result.hi
    # Cosines are not counts: for the interval, each image's mean cosine is rounded to
    # COSINE_STEP so that images with equal values share a cell (the kernel's cost grows with
    # the cells); the value itself is exact.
    with_cosine = per_image["with_cosine"].to_numpy(np.int64)
    mean = per_image["cosine"].to_numpy(np.float64) / np.maximum(with_cosine, 1)
    steps = np.rint(mean / COSINE_STEP).astype(np.int64)
    offsets, cells, mult = compress_cells(
        group, np.column_stack([steps * with_cosine, with_cosine]), len(table)
    )
    seeds = group_seeds(config.seed, [("robustness-family", "mean_cosine", *n) for n in names])
    result = cluster_ratio(
        offsets,
        cells[:, 0] * COSINE_STEP,
        cells[:, 1],
        mult,
        seeds,
        config.bootstrap,
        config.ci_level,
    )
    totals = np.bincount(group, weights=per_image["cosine"], minlength=len(table))
    counts = np.bincount(group, weights=with_cosine, minlength=len(table))
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["mean_cosine"] = np.where(counts > 0, totals / counts, np.nan)
    frame["mean_cosine_lo"], frame["mean_cosine_hi"] = result.lo, result.hi
    return frame[list(FAMILY_COLUMNS)]


#: Rounding of an image's mean cosine before the drift's bootstrap (moves a bound ≤ 5e-5).
COSINE_STEP = 1e-4


def robustness_from_rows(rows: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    from ubsafe.kernels import (
        bootstrap_robustness,
        flip_rate,
        group_mean,
        group_seeds,
        joint_counts,
        robust_accuracy,
        robustness_counts,
    )

    keys = ["classifier", "perturbation", "family", "severity", "seed"]
    variants = rows[keys].drop_duplicates()
    order = {name: i for i, name in enumerate(config.classifiers)}
    variants = (
        variants.assign(_c=variants["classifier"].map(order))
        .sort_values(["_c", "family", "perturbation", "severity", "seed"], kind="stable")
        .drop(columns="_c")
    )
    table = [(*v, source) for v in variants.itertuples(index=False) for source in SOURCES]
    index = {cell: g for g, cell in enumerate(table)}
    base = list(zip(*(rows[k].to_numpy() for k in keys), strict=True))
    group_parts, row_parts = [], []
    for source_all in (False, True):
        src = np.full(len(rows), ALL_SOURCES, object) if source_all else rows["source"].to_numpy()
        group = np.fromiter(
            (index[(*b, s)] for b, s in zip(base, src, strict=True)), np.int64, len(rows)
        )
        group_parts.append(group)
        row_parts.append(np.arange(len(rows)))
    groups, at = np.concatenate(group_parts), np.concatenate(row_parts)
    joint = joint_counts(
        groups,
        rows["label"].to_numpy(np.int8)[at],
        rows["pred_clean"].to_numpy(np.int8)[at],
        rows["pred"].to_numpy(np.int8)[at],
        len(table),
    )
    seeds = group_seeds(
        config.seed,
        [("robustness", c, p, f, f"{s:g}", str(sd), src) for c, p, f, s, sd, src in table],
    )
    ci = bootstrap_robustness(joint, seeds, n_boot=config.bootstrap, level=config.ci_level)
    counts = robustness_counts(joint)
    cosine = group_mean(groups, rows["cosine"].to_numpy(np.float64)[at], len(table))
    frame = pd.DataFrame(table, columns=[*keys, "source"])
    frame["n"] = counts[:, 1]
    frame["n_images"] = counts[:, 0]
    frame["robust_accuracy"] = robust_accuracy(joint)
    frame["ra_lo"], frame["ra_hi"] = ci["robust_accuracy"]
    frame["flip_rate"] = flip_rate(joint)
    frame["flip_lo"], frame["flip_hi"] = ci["flip_rate"]
    frame["mean_cosine"] = cosine
    return frame[frame["n_images"] > 0][list(ROBUSTNESS_COLUMNS)].reset_index(drop=True)
