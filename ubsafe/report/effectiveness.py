"""Sections on effectiveness: the paper's Table 3, the real-vs-AI gap, precision and recall, and
classifiers compared on the same images."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ubsafe.report import figures
from ubsafe.report import format as fmt
from ubsafe.report.context import Context, records
from ubsafe.report.document import Heading, Section, Table, Text, prose
from ubsafe.report.tables import RUN, wide_table
from ubsafe.taxonomy import CATEGORIES, OVERALL

SOURCES = (("real", "real-world images"), ("ai", "AI-generated images"), ("all", "all images"))
#: |precision − recall| from which F1 hides which error a classifier makes.
PR_SPREAD = 0.25
ALPHA = 0.05


def _missing_effectiveness(ctx: Context) -> list[Text]:
    absent = ctx.without_table("effectiveness")
    if not absent:
        return []
    unlabelled = [r for r in absent if r.summary.get("labelled") is False]
    other = [r for r in absent if r not in unlabelled]
    texts = []
    if unlabelled:
        texts.append(
            Text(
                "No effectiveness results in "
                + ", ".join(r.label for r in unlabelled)
                + ": the dataset has no labels, and F1 and the other metrics need ground truth "
                "(results/predictions.parquet holds every classifier's decision)."
            )
        )
    if other:
        texts.append(
            Text(
                "No effectiveness results in "
                + ", ".join(r.label for r in other)
                + " (results/effectiveness.csv absent)."
            )
        )
    return texts


def _metric_cell(row: Any, metric: str, *, with_n: bool = True) -> str:
    if row["n"] == 0:
        return fmt.ABSENT
    n = row["n"] if with_n else None
    return fmt.measured(row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"], n)


def table3(ctx: Context, source: str, metric: str = "f1") -> pd.DataFrame:
    """Classifier × category for one source (the paper's Table 3 layout); runs side by side."""
    rows: list[dict[str, Any]] = []
    for run, eff in ctx.with_table("effectiveness"):
        for _, row in eff[eff["source"] == source].iterrows():
            rows.append(
                {
                    "classifier": row["classifier"],
                    "category": row["category"],
                    RUN: run.label,
                    "cell": _metric_cell(row, metric),
                }
            )
    orders: dict[str, Any] = dict(ctx.classifier_orders())
    if ctx.several:  # runs side by side outgrow the page: the pooled column comes first
        orders["category"] = (OVERALL, *CATEGORIES)
    return wide_table(records(rows), ["classifier"], ["category"], ctx.labels, orders=orders)


OVERALL_FIELDS = ("n", "F1", "precision", "recall", "accuracy", "AUROC")


def overall_table(ctx: Context) -> pd.DataFrame:
    """Each classifier's pooled row (its covered categories) on real, AI and all images."""
    rows: list[dict[str, Any]] = []
    for run, eff in ctx.with_table("effectiveness"):
        for _, row in eff[eff["category"] == OVERALL].iterrows():
            cells = {"n": fmt.n_line(row["n"]).removeprefix("n=")}
            for field in OVERALL_FIELDS[1:]:
                cells[field] = _metric_cell(row, field.lower(), with_n=False)
            for field, cell in cells.items():
                rows.append(
                    {
                        "classifier": row["classifier"],
                        "source": row["source"],
                        "field": field,
                        RUN: run.label,
                        "cell": cell,
                    }
                )
    return wide_table(
        records(rows),
        ["classifier", "source"],
        ["field"],
        ctx.labels,
        orders={**ctx.classifier_orders(), "field": OVERALL_FIELDS},
        labels={"source": fmt.source_label},
    )


def effectiveness_section(ctx: Context) -> Section:
    section = Section("effectiveness", "Effectiveness (Table 3 layout)")
    section.add(*_missing_effectiveness(ctx))
    if not any(True for _ in ctx.with_table("effectiveness")):
        return section
    level = ctx.level_text()
    section.add(
        prose(f"""
        F1 with unsafe as the positive class, per classifier and unsafe category, with its {level}
        bootstrap interval and its number of images below. Each classifier is scored on the
        categories it covers (— marks a category it does not cover); the column 'overall' pools
        its covered categories. n/a: undefined (no unsafe image, or nothing flagged, as
        scikit-learn's zero_division rule).
        """),
        Text(fmt.small_note(level)),
    )
    for source, title in SOURCES:
        frame = table3(ctx, source)
        if not frame.empty:
            section.add(Table(frame, f"F1 on {title}"))
    overall = overall_table(ctx)
    if not overall.empty:
        section.add(
            Heading("Pooled over covered categories"),
            Table(overall, f"Every metric on the pooled rows, {level} bootstrap intervals"),
        )
    for run, eff in ctx.with_table("effectiveness"):
        section.add(
            *ctx.figure(
                figures.effectiveness(eff, ctx.classifiers),
                "effectiveness",
                "F1 by category on real (circles) and AI-generated (squares) images",
                run,
            )
        )
    return section


# --- the real-vs-AI gap ---------------------------------------------------------------------

GAP_FIELDS = ("real", "AI", "real − AI", "p")


def _gap_cells(row: Any, n: dict[tuple[str, str, str], Any]) -> dict[str, str]:
    key = (row["classifier"], row["category"])
    n_real, n_ai = n.get((*key, "real")), n.get((*key, "ai"))
    diff = fmt.with_interval(row["diff"], row["diff_lo"], row["diff_hi"], sign=True)
    smaller = None if n_real is None or n_ai is None else min(n_real, n_ai)
    if smaller is not None and smaller < fmt.SMALL_N:  # the smaller side's n, flagged
        diff = _with_n(diff, smaller)
    return {
        "real": _with_n(fmt.number(row["real"]), n_real),
        "AI": _with_n(fmt.number(row["ai"]), n_ai),
        "real − AI": diff,
        "p": fmt.p_text(row["p_value"]),
    }


def _with_n(value: str, n: Any) -> str:
    line = fmt.n_line(n)
    return f"{value}\n{line}" if line else value


def _sizes(run: Any) -> dict[tuple[str, str, str], Any]:
    """(classifier, category, source) → n, from the run's effectiveness table."""
    eff = run.get("effectiveness")
    if eff is None:
        return {}
    return {
        (str(r.classifier), str(r.category), str(r.source)): r.n
        for r in eff[["classifier", "category", "source", "n"]].itertuples(index=False)
    }


def gap_table(
    ctx: Context, keys: pd.DataFrame | None = None, metric: str | None = "f1"
) -> pd.DataFrame:
    """Per (classifier, category[, metric]): real, AI, the difference with its interval, p."""
    rows: list[dict[str, Any]] = []
    for run, gaps in ctx.with_table("gaps"):
        part = gaps if metric is None else gaps[gaps["metric"] == metric]
        if keys is not None:
            part = part.merge(keys, on=list(keys.columns))
        sizes = _sizes(run)
        for _, row in part.iterrows():
            for field, cell in _gap_cells(row, sizes).items():
                record = {
                    "classifier": row["classifier"],
                    "category": row["category"],
                    "field": field,
                    RUN: run.label,
                    "cell": cell,
                }
                if metric is None:
                    record["metric"] = row["metric"]
                rows.append(record)
    index = (
        ["classifier", "category"] if metric is not None else ["classifier", "category", "metric"]
    )
    return wide_table(
        records(rows),
        index,
        ["field"],
        ctx.labels,
        orders={**ctx.classifier_orders(), "field": GAP_FIELDS},
    )


def gap_summary(gaps: pd.DataFrame, label: str = "", metric: str = "f1") -> str:
    """One sentence: how many cells differ significantly, and in how many AI images fare worse."""
    part = gaps[(gaps["metric"] == metric) & gaps["p_value"].notna()]
    significant = part[part["p_value"] < ALPHA]
    worse_ai = int((significant["diff"] > 0).sum())
    prefix = f"{label}: " if label else ""
    return prose(f"""
        {prefix}{len(significant)} of {len(part)} (classifier, category) cells differ significantly
        in {metric.upper()} between real and AI-generated images (p < {ALPHA}); in {worse_ai} of
        them the classifier is worse on AI-generated images.
        """).text


def gap_section(ctx: Context) -> Section:
    section = Section("gap", "Real vs AI-generated: the gap")
    pairs = list(ctx.with_table("gaps"))
    if not pairs:
        return section.add(Text("No real-vs-AI gaps (results/gaps.csv absent in every run)."))
    section.add(
        prose(f"""
        F1 on real minus F1 on AI-generated images, with its {ctx.level_text()} bootstrap interval
        and a two-sided bootstrap p-value; marks: * p < 0.05, ** p < 0.01, *** p < 0.001 (not
        adjusted for the number of cells). A positive difference means the classifier does worse on
        AI-generated images. n: the images on each side; a difference is flagged when either side
        has fewer than {fmt.SMALL_N}.
        """)
    )
    section.add(*(Text(gap_summary(gaps, run.label if ctx.several else "")) for run, gaps in pairs))
    frame = gap_table(ctx)
    if not frame.empty:
        section.add(Table(frame, "F1 gap per classifier and category"))
    for run, gaps in pairs:
        section.add(
            *ctx.figure(
                figures.gaps(gaps, ctx.classifiers),
                "gap",
                "F1 real − AI-generated with intervals (filled: p < 0.05)",
                run,
            )
        )
    return section


# --- precision and recall -------------------------------------------------------------------

PR_FIELDS = ("n", "F1", "precision", "recall", "mostly")


def _spread_keys(ctx: Context) -> pd.DataFrame:
    keys = []
    for _, eff in ctx.with_table("effectiveness"):
        part = eff[
            (eff["source"] == "all") & ((eff["precision"] - eff["recall"]).abs() >= PR_SPREAD)
        ]
        keys.append(part[["classifier", "category"]])
    return (
        pd.concat(keys).drop_duplicates()
        if keys
        else pd.DataFrame(columns=["classifier", "category"])
    )


def spread_table(ctx: Context) -> pd.DataFrame:
    """Cells (all images) where precision and recall are at least PR_SPREAD apart, in any run."""
    keys = _spread_keys(ctx)
    rows: list[dict[str, Any]] = []
    for run, eff in ctx.with_table("effectiveness"):
        part = eff[eff["source"] == "all"].merge(keys, on=["classifier", "category"])
        for _, row in part.iterrows():
            gap = row["precision"] - row["recall"]
            mostly = "misses unsafe" if gap > 0 else "flags safe" if gap < 0 else ""
            cells = {
                "n": fmt.n_line(row["n"]).removeprefix("n="),
                "F1": fmt.number(row["f1"]),
                "precision": fmt.number(row["precision"]),
                "recall": fmt.number(row["recall"]),
                "mostly": mostly if pd.notna(gap) else fmt.UNDEFINED,
            }
            for field, cell in cells.items():
                rows.append(
                    {
                        "classifier": row["classifier"],
                        "category": row["category"],
                        "field": field,
                        RUN: run.label,
                        "cell": cell,
                    }
                )
    return wide_table(
        records(rows),
        ["classifier", "category"],
        ["field"],
        ctx.labels,
        orders={**ctx.classifier_orders(), "field": PR_FIELDS},
    )


def hidden_gap_keys(ctx: Context) -> pd.DataFrame:
    """(classifier, category) whose F1 gap is not significant but a precision or recall gap is."""
    keys = []
    for _, gaps in ctx.with_table("gaps"):
        wide = gaps.pivot_table(
            index=["classifier", "category"], columns="metric", values="p_value", aggfunc="first"
        )
        f1 = wide["f1"] if "f1" in wide else pd.Series(float("nan"), index=wide.index)
        others = [wide[m] < ALPHA for m in ("precision", "recall") if m in wide]
        if not others:
            continue
        hidden = ~(f1 < ALPHA) & pd.concat(others, axis=1).any(axis=1)
        keys.append(wide.index[hidden].to_frame(index=False))
    return (
        pd.concat(keys).drop_duplicates()
        if keys
        else pd.DataFrame(columns=["classifier", "category"])
    )


def precision_recall_section(ctx: Context) -> Section:
    section = Section("precision-recall", "Precision and recall: where F1 hides the story")
    if not any(True for _ in ctx.with_table("effectiveness")):
        return section.add(Text("No effectiveness results in any run."))
    section.add(
        prose(f"""
        F1 weighs misses and false alarms alike. Below: cells (real and AI pooled) where precision
        and recall are at least {PR_SPREAD} apart — 'misses unsafe' when recall is the lower, 'flags
        safe' when precision is — and real-vs-AI gaps that are significant in precision or recall
        while the F1 gap is not.
        """)
    )
    spread = spread_table(ctx)
    section.add(
        Table(spread, f"|precision − recall| ≥ {PR_SPREAD} (all images)")
        if not spread.empty
        else Text(f"No cell has precision and recall {PR_SPREAD} or more apart.")
    )
    hidden = hidden_gap_keys(ctx)
    if not hidden.empty:
        frame = gap_table(ctx, keys=hidden, metric=None)
        frame = frame[frame.index.get_level_values("metric").isin(["f1", "precision", "recall"])]
        section.add(
            Table(frame, "Real-vs-AI gaps in precision or recall behind a non-significant F1 gap")
        )
    elif any(True for _ in ctx.with_table("gaps")):
        section.add(Text("No precision or recall gap is significant where the F1 gap is not."))
    for run, eff in ctx.with_table("effectiveness"):
        section.add(
            *ctx.figure(
                figures.precision_recall(eff, ctx.classifiers),
                "precision-recall",
                "Precision vs recall per category; grey curves: F1 = 0.2, 0.4, 0.6, 0.8",
                run,
            )
        )
    return section


# --- classifiers compared -------------------------------------------------------------------

PAIR_FIELDS = ("n", "F1 a", "F1 b", "a − b", "McNemar p")


def pairs_table(ctx: Context) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for run, pairs in ctx.with_table("pairs"):
        part = pairs[(pairs["category"] == OVERALL) & (pairs["source"] == "all")]
        for _, row in part.iterrows():
            cells = {
                "n": fmt.n_line(row["n"]).removeprefix("n="),
                "F1 a": fmt.number(row["f1_a"]),
                "F1 b": fmt.number(row["f1_b"]),
                "a − b": fmt.with_interval(
                    row["f1_diff"], row["f1_diff_lo"], row["f1_diff_hi"], sign=True
                ),
                "McNemar p": fmt.p_text(row["mcnemar_p"]),
            }
            for field, cell in cells.items():
                rows.append(
                    {
                        "classifier_a": row["classifier_a"],
                        "classifier_b": row["classifier_b"],
                        "field": field,
                        RUN: run.label,
                        "cell": cell,
                    }
                )
    return wide_table(
        records(rows),
        ["classifier_a", "classifier_b"],
        ["field"],
        ctx.labels,
        orders={**ctx.classifier_orders(), "field": PAIR_FIELDS},
        index_names={"classifier_a": "a", "classifier_b": "b"},
    )


def pairs_section(ctx: Context) -> Section:
    section = Section("pairs", "Classifiers compared on the same images")
    frame = pairs_table(ctx)
    if frame.empty:
        return section.add(
            Text("No pairwise comparisons (results/pairs.csv absent or without pooled rows).")
        )
    section.add(
        prose(f"""
        Pairs of classifiers on the images both are scored on (all categories they share, real and
        AI pooled): the F1 difference with its {ctx.level_text()} bootstrap interval, and McNemar's
        test on their disagreements.
        """),
        prose("""
        The two can seem to disagree — an F1 difference whose interval includes 0 next to McNemar
        p < 0.001 — because they test different things: McNemar asks whether one classifier is
        right where the other is wrong more often than the reverse (a difference in accuracy,
        counting safe images judged right), while F1 ignores correctly passed safe images and
        weighs misses against false alarms.
        """),
    )
    return section.add(Table(frame, "F1 of a vs b on shared images"))
