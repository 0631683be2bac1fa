"""The section on the real-vs-AI distribution shift in embedding space (results/shift.csv and
results/projection.parquet, written by `ubsafe.shift`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ubsafe.report import figures
from ubsafe.report import format as fmt
from ubsafe.report.context import Context, records
from ubsafe.report.document import Section, Table, Text, prose
from ubsafe.report.tables import RUN, wide_table
from ubsafe.shift import BANDWIDTH_ROWS, SHIFT_REPLICATES

SHIFT_FIELDS = ("Fréchet", "MMD²", "n real", "n AI")
METRIC_FIELD = {"frechet": "Fréchet", "mmd": "MMD²"}
PROJECTION_CAPTION = (
    "First two principal components of the L2-normalised clean embeddings, by category; "
    "blue: real, orange: AI-generated"
)


def shift_table(ctx: Context) -> pd.DataFrame:
    """Category × (metric with interval, row counts), runs side by side."""
    rows: list[dict[str, Any]] = []
    for run, shift in ctx.with_table("shift"):
        for _, row in shift.iterrows():
            field = METRIC_FIELD.get(str(row["metric"]), str(row["metric"]))
            digits = 4 if row["metric"] == "mmd" else 3
            cell = fmt.with_interval(row["value"], row["lo"], row["hi"], digits)
            rows.append({"category": row["category"], "field": field, RUN: run.label, "cell": cell})
        for _, row in shift.drop_duplicates("category").iterrows():
            for field, column in (("n real", "n_real"), ("n AI", "n_ai")):
                rows.append(
                    {
                        "category": row["category"],
                        "field": field,
                        RUN: run.label,
                        "cell": fmt.integer(row[column]),
                    }
                )
    return wide_table(
        records(rows), ["category"], ["field"], ctx.labels, orders={"field": SHIFT_FIELDS}
    )


def _encoders(ctx: Context) -> str:
    names = {
        str(e) for _, shift in ctx.with_table("shift") for e in shift["encoder"].dropna().unique()
    }
    return ", ".join(sorted(names)) or "the run's encoder"


def shift_section(ctx: Context) -> Section:
    section = Section("shift", "Distribution shift: real vs AI-generated in embedding space")
    absent = ctx.without_table("shift")
    if absent:
        why = "results/shift.csv absent: no pair of real and AI-generated images, or not reduced"
        section.add(
            Text("No shift results in " + ", ".join(f"{r.label} ({why})" for r in absent) + ".")
        )
    if len(absent) == len(ctx.runs):
        return section
    section.add(
        prose(f"""
        How far AI-generated images sit from real ones in the embedding space of {_encoders(ctx)},
        per category, on L2-normalised clean embeddings (cached; nothing re-encoded). Fréchet: the
        distance between Gaussians fitted to each set (the FID formula); it is biased upwards in
        small samples, more so in high dimension, so compare categories of similar size. MMD²: the
        unbiased squared maximum mean discrepancy with a Gaussian kernel whose bandwidth is the
        median distance between the run's embeddings (up to {BANDWIDTH_ROWS:,} sampled); about 0
        when there is no shift. Intervals ({ctx.level_text()}): how much each estimate varies
        between samples of this size — a two-sample bootstrap (real and AI rows resampled
        independently, min(B, {SHIFT_REPLICATES}) replicates, seeded per category), its percentile
        interval centred on the estimate; they do not remove the Fréchet bias.
        """)
    )
    section.add(
        Table(shift_table(ctx), "Real vs AI-generated: Fréchet distance and MMD² per category")
    )
    frames = [(run.label, shift) for run, shift in ctx.with_table("shift")]
    section.add(
        *ctx.figure(
            figures.shift(frames), "shift", "Fréchet distance and MMD² per category with intervals"
        )
    )
    for run, projection in ctx.with_table("projection"):
        section.add(
            *ctx.figure(
                figures.projection(projection),
                "projection",
                PROJECTION_CAPTION,
                run,
            )
        )
    return section
