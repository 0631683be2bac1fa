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
FAMILY_CAPTION = (
    "Mean Robust Accuracy per perturbation family (perturbations and severities weighted equally)"
)
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
) -> pd.DataFrame:
    """Rows (classifier, perturbation[, seed]) × columns (source, severity or budget)."""
    seed = _needs_seed(ctx)
    rows: list[dict[str, Any]] = []
    for run, rob in ctx.with_table("robustness"):
        part = rob[(rob["family"] == "attack") == attack]
        if drop is not None:
            part = drop(part)
        for _, row in part.iterrows():
            record = {
                "classifier": row["classifier"],
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
        orders=ctx.classifier_orders(),
        labels={"source": fmt.source_label, "severity": lambda s: fmt.severity_label(family, s)},
    )


def by_family(ctx: Context, value: str) -> pd.DataFrame:
    """Rows classifier × columns (family, source): `value` averaged over perturbations, severities
    and seeds (each equally)."""
    rows: list[dict[str, Any]] = []
    for run, rob in ctx.with_table("robustness"):
        means = (
            rob.groupby(["classifier", "family", "source"], sort=False)[value].mean().reset_index()
        )
        for _, row in means.iterrows():
            rows.append(
                {
                    "classifier": row["classifier"],
                    "family": row["family"],
                    "source": row["source"],
                    RUN: run.label,
                    "cell": fmt.number(row[value]),
                }
            )
    return wide_table(
        records(rows),
        ["classifier"],
        ["family", "source"],
        ctx.labels,
        orders=ctx.classifier_orders(),
        labels={"source": fmt.source_label},
    )


def _ra_cell(row: Any) -> str:
    return fmt.with_interval(row["robust_accuracy"], row["ra_lo"], row["ra_hi"])


def _cosine_cell(row: Any) -> str:
    return fmt.number(row["mean_cosine"])


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
        """)
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
    section.add(*_intro(ctx))
    section.add(
        Heading("Robust accuracy by family"),
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
            "Mean flip rate per perturbation family (over all judged images)",
        ),
    )
    return section.add(*drift_blocks(ctx))


def drift_blocks(ctx: Context) -> list[Any]:
    blocks: list[Any] = [Heading("Embedding drift")]
    corrupted = _by_severity(ctx, False, _cosine_cell, drop=_with_cosine)
    attacked = _by_severity(ctx, True, _cosine_cell, drop=_with_cosine)
    if corrupted.empty and attacked.empty:
        return [
            *blocks,
            Text("No embedding drift: no classifier in these results reads embeddings."),
        ]
    blocks.append(
        Text(
            "Mean cosine similarity between each image's clean and perturbed embedding "
            "(1 = unmoved)."
        )
    )
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
