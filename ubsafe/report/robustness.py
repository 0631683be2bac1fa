"""Sections on robustness: Robust Accuracy by corruption, severity and attack, flip rate, and how
far perturbations move the embedding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from ubsafe.report import figures
from ubsafe.report import format as fmt
from ubsafe.report.context import Context, records
from ubsafe.report.document import Heading, Section, Table, Text, prose
from ubsafe.report.load import RunResults
from ubsafe.report.tables import RUN, wide_table

KEY = ["classifier", "source", "perturbation", "severity"]
FAMILY_CAPTION = "Robust Accuracy per perturbation family"
LINES = "(solid: real, dashed: AI-generated)"


def _why_absent(run: RunResults) -> str:
    target = run.summary.get("target")
    if target == "effectiveness":
        return "an effectiveness-only run"
    return "results/robustness.csv absent" + (f", target {target}" if target else "")


def _needs_seed(ctx: Context) -> bool:
    """Whether some run has several seeds for one cell (then seed becomes a row key)."""
    return any(rob.duplicated(KEY).any() for _, rob in ctx.with_table("robustness"))


def image_only(ctx: Context) -> list[str]:
    """Classifiers without an embedding: every mean cosine of theirs is NaN."""
    names: set[str] = set()
    for _, rob in ctx.with_table("robustness"):
        grouped = rob.groupby("classifier")["mean_cosine"].apply(lambda s: bool(s.isna().all()))
        names.update(str(name) for name, flag in grouped.items() if flag)
    return [c for c in ctx.classifiers if c in names]


def _by_severity(
    ctx: Context,
    attack: bool,
    value: Callable[[Any], str],
    *,
    drop: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    merge_identical: bool = False,
) -> pd.DataFrame:
    """Rows (classifier, perturbation[, seed]) × columns (source, severity or budget); with
    `merge_identical`, classifiers whose rows are all equal share one row (`shared_rows`)."""
    seed = _needs_seed(ctx)
    rows: list[dict[str, Any]] = []
    order = list(ctx.classifiers)
    for run, rob in ctx.with_table("robustness"):
        part = rob[(rob["family"] == "attack") == attack]
        if drop is not None:
            part = drop(part)
        names = {str(c): str(c) for c in part["classifier"].unique()}
        if merge_identical:
            names = shared_rows(part)
            part = part[[names[str(c)].split(", ")[0] == str(c) for c in part["classifier"]]]
            order += [n for n in dict.fromkeys(names.values()) if n not in order]
        for _, row in part.iterrows():
            record = {
                "classifier": names[str(row["classifier"])],
                "perturbation": row["perturbation"],
                "source": row["source"],
                "severity": float(row["severity"]),
                RUN: run.label,
                "cell": value(row),
            }
            if seed:
                record["seed"] = row["seed"]
            rows.append(record)
    index = ["classifier", "perturbation", *(["seed"] if seed else [])]
    family = "attack" if attack else "corruption"
    return wide_table(
        records(rows),
        index,
        ["source", "severity"],
        ctx.labels,
        orders={"classifier": order},
        labels={"source": fmt.source_label, "severity": lambda s: fmt.severity_label(family, s)},
    )


def _images(frame: pd.DataFrame) -> pd.Series:
    """Images behind each row: every judged image (`n_images`) where results have it."""
    return frame["n_images"] if "n_images" in frame.columns else frame["n"]


DRIFT_FIELDS = (
    "source",
    "perturbation",
    "family",
    "severity",
    "seed",
    "mean_cosine",
    "n_images",
)


def shared_rows(part: pd.DataFrame) -> dict[str, str]:
    """classifier → the row label it shares with every classifier whose rows are identical.

    Classifiers that read one encoder and judge the same images move alike under every
    perturbation: their drift rows are the same numbers, shown once as `a, b`.
    """
    fields = [f for f in DRIFT_FIELDS if f in part.columns]
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, rows in part.groupby("classifier", sort=False):
        keys = [f for f in ("source", "perturbation", "family", "severity", "seed") if f in fields]
        ordered = rows.sort_values(keys, kind="stable")[fields]
        key = tuple(tuple(r) for r in ordered.astype(str).itertuples(index=False))
        groups.setdefault(key, []).append(str(name))
    return {name: ", ".join(names) for names in groups.values() for name in names}


#: robustness_family.csv's interval columns and n per statistic.
FAMILY_STATS: dict[str, tuple[str, str, str]] = {
    "robust_accuracy": ("robust_accuracy_lo", "robust_accuracy_hi", "n"),
    "flip_rate": ("flip_rate_lo", "flip_rate_hi", "n_images"),
    "mean_cosine": ("mean_cosine_lo", "mean_cosine_hi", "n_images"),
}


def _family_means(rob: pd.DataFrame, value: str) -> pd.DataFrame:
    """Family means of robustness.csv without intervals (results from before
    robustness_family.csv): perturbations, severities and seeds weighted equally."""
    rob = rob.assign(_n=rob["n"] if value == "robust_accuracy" else _images(rob))
    means = (
        rob.groupby(["classifier", "family", "source"], sort=False)
        .agg(value=(value, "mean"), n=("_n", "min"))
        .reset_index()
    )
    return means.assign(lo=float("nan"), hi=float("nan"))


def _family_rows(run: RunResults, value: str) -> pd.DataFrame | None:
    """(classifier, family, source, value, lo, hi, n) for one run, with intervals when the run
    has robustness_family.csv."""
    family = run.get("robustness_family")
    if family is None:
        rob = run.get("robustness")
        return None if rob is None else _family_means(rob, value)
    lo, hi, n = FAMILY_STATS[value]
    return family.rename(columns={value: "value", lo: "lo", hi: "hi"}).assign(n=family[n])[
        ["classifier", "family", "source", "value", "lo", "hi", "n"]
    ]


def by_family(ctx: Context, value: str, *, merge_identical: bool = False) -> pd.DataFrame:
    """Rows classifier × columns (family, source): `value` over each family's perturbations,
    severities and seeds, with its interval where results have one; n is the images behind it
    (clean-correct ones for Robust Accuracy, all judged ones otherwise)."""
    rows: list[dict[str, Any]] = []
    order = list(ctx.classifiers)
    for run in ctx.runs:
        means = _family_rows(run, value)
        if means is None:
            continue
        means = means[means["value"].notna()]
        if value == "mean_cosine":  # each classifier's adversarial drift is its own: see below
            means = means[means["family"] != "attack"]
        names = {str(c): str(c) for c in means["classifier"].unique()}
        if merge_identical:
            names = shared_rows(means.rename(columns={"value": "mean_cosine", "n": "n_images"}))
            means = means[[names[str(c)].split(", ")[0] == str(c) for c in means["classifier"]]]
            order += [n for n in dict.fromkeys(names.values()) if n not in order]
        for _, row in means.iterrows():
            rows.append(
                {
                    "classifier": names[str(row["classifier"])],
                    "family": row["family"],
                    "source": row["source"],
                    RUN: run.label,
                    "cell": fmt.measured(row["value"], row["lo"], row["hi"], row["n"]),
                }
            )
    return wide_table(
        records(rows),
        ["classifier"],
        ["family", "source"],
        ctx.labels,
        orders={"classifier": order},
        labels={"source": fmt.source_label},
    )


def _ra_cell(row: Any) -> str:
    return fmt.measured(row["robust_accuracy"], row["ra_lo"], row["ra_hi"], row["n"])


def _cosine_cell(row: Any) -> str:
    n = row["n_images"] if "n_images" in row.index else row["n"]
    return fmt.measured(row["mean_cosine"], None, None, n)


def _with_cosine(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["mean_cosine"].notna()]


def _intro(ctx: Context) -> list[Text]:
    level = ctx.level_text()
    texts = [
        prose(f"""
        Robust Accuracy: of the images a classifier judged correctly when clean, the fraction whose
        decision survives the perturbation ({level} bootstrap interval below). Flip rate: the
        fraction of all judged images whose decision changes. Corruptions are the ImageNet-C set at
        severities 1–5; attacks (FGSM, PGD, DeepFool) run end to end through encoder and head, with
        budget ε in 1/255 pixel units, or 'paper ε' for the paper's 0.01 in the model's normalised
        input.
        """),
        Text(fmt.small_note(level)),
    ]
    modes = {run.label: run.summary.get("attack_mode") for run, _ in ctx.with_table("robustness")}
    if any(modes.values()):
        texts.append(
            Text(
                "Attack mode: "
                + ", ".join(
                    f"{label} {mode}" if ctx.several else str(mode)
                    for label, mode in modes.items()
                    if mode
                )
                + "."
            )
        )
    images = image_only(ctx)
    if images:
        verb = "judges" if len(images) == 1 else "judge"
        texts.append(
            prose(f"""
            {", ".join(images)} {verb} the image itself, with no embedding: embedding drift does not
            apply, and such classifiers are judged under noise and corruptions only (no gradient
            attack).
            """)
        )
    return texts


def robustness_section(ctx: Context) -> Section:
    section = Section("robustness", "Robustness")
    absent = ctx.without_table("robustness")
    if absent:
        section.add(
            Text(
                "No robustness results in "
                + ", ".join(f"{r.label} ({_why_absent(r)})" for r in absent)
                + "."
            )
        )
    if len(absent) == len(ctx.runs):
        return section
    for run in ctx.runs:
        unreachable = run.summary.get("not_attackable") or []
        if unreachable and run not in absent:
            section.add(
                Text(
                    f"{run.label}: not attackable — {', '.join(unreachable)} (no configured "
                    "attack reaches them: no gradients, or a judge whose registry entry lists no "
                    "such attack); their rows are perturbations only."
                )
            )
    section.add(*_intro(ctx))
    level = ctx.level_text()
    section.add(
        Heading("Robust accuracy by family"),
        prose(f"""
        Per family, pooled over its perturbations, severities and seeds (every image under each
        counts once; with the same images under each, this is their plain mean), with a {level}
        interval from a bootstrap that resamples images, each with all its perturbed versions.
        """),
        Table(by_family(ctx, "robust_accuracy"), FAMILY_CAPTION),
    )
    corruptions = _by_severity(ctx, False, _ra_cell)
    if not corruptions.empty:
        section.add(
            Heading("By corruption and severity"),
            Table(corruptions, "Robust Accuracy by corruption and severity"),
        )
    for run, rob in ctx.with_table("robustness"):
        section.add(
            *ctx.figure(
                figures.robustness_by_severity(rob, ctx.classifiers),
                "robustness-corruptions",
                "Robust Accuracy vs severity, mean per corruption family " + LINES,
                run,
            )
        )
    attacks = _by_severity(ctx, True, _ra_cell)
    if not attacks.empty:
        section.add(
            Heading("By attack and budget"), Table(attacks, "Robust Accuracy by attack and budget")
        )
    for run, rob in ctx.with_table("robustness"):
        section.add(
            *ctx.figure(
                figures.robustness_by_budget(rob, ctx.classifiers),
                "robustness-attacks",
                "Robust Accuracy vs attack budget " + LINES,
                run,
            )
        )
    section.add(
        Heading("Flip rate"),
        Table(
            by_family(ctx, "flip_rate"),
            "Flip rate per perturbation family (of all judged images), pooled as above",
        ),
    )
    return section.add(*drift_blocks(ctx))


def drift_blocks(ctx: Context) -> list[Any]:
    blocks: list[Any] = [Heading("Embedding drift")]
    corrupted = _by_severity(ctx, False, _cosine_cell, drop=_with_cosine, merge_identical=True)
    attacked = _by_severity(ctx, True, _cosine_cell, drop=_with_cosine, merge_identical=True)
    if corrupted.empty and attacked.empty:
        return [
            *blocks,
            Text("No embedding drift: no classifier in these results reads embeddings."),
        ]
    blocks.append(
        Text(
            "Mean cosine similarity between each image's clean and perturbed embedding "
            "(1 = unmoved). Classifiers that read the same encoder and judge the same images "
            "have the same drift and share one row."
        )
    )
    family = by_family(ctx, "mean_cosine", merge_identical=True)
    if not family.empty:
        blocks.append(Table(family, "Mean cosine per corruption family, clean vs corrupted"))
    if not corrupted.empty:
        blocks.append(Table(corrupted, "Mean cosine, clean vs corrupted embedding"))
    if not attacked.empty:
        blocks.append(Table(attacked, "Mean cosine, clean vs adversarial embedding"))
    for run, rob in ctx.with_table("robustness"):
        blocks += ctx.figure(
            figures.drift(rob, ctx.classifiers),
            "drift",
            "Mean cosine vs severity per corruption family " + LINES,
            run,
        )
    return blocks
