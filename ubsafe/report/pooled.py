"""F1 pooled over several runs' images (PerspectiveVision's headline: one run per dataset).

Only for several runs on different datasets (runs that compare settings on the same data have
nothing to pool): each run's classifiers on its dataset, then `overall`, every image of every run
pooled, with a 95 % multinomial bootstrap interval from the pooled confusion cells.
"""

from __future__ import annotations

import pandas as pd

from ubsafe.report.context import Context
from ubsafe.report.document import Section, Table, prose


def pooled_table(ctx: Context) -> pd.DataFrame:
    from ubsafe.kernels import bootstrap_ci, group_seeds
    from ubsafe.report.pooled_f1 import pooled_over_runs

    table = pooled_over_runs([run.root for run in ctx.runs])
    if table.empty:
        return table
    counts = table[["tp", "fp", "fn", "tn"]].to_numpy("int64")
    seeds = group_seeds(
        0, [("pooled", c, d) for c, d in zip(table["classifier"], table["dataset"], strict=True)]
    )
    lo, hi = bootstrap_ci(counts, seeds)["f1"]
    shown = pd.DataFrame(
        {
            "classifier": table["classifier"],
            "dataset": table["dataset"],
            "n": table["n"].astype(int).astype(str),
            "unsafe": table["n_unsafe"].astype(int).astype(str),
            "F1": [
                f"{f:.3f}\n[{a:.3f}, {b:.3f}]" for f, a, b in zip(table["f1"], lo, hi, strict=True)
            ],
            "precision": table["precision"].map(lambda v: f"{v:.3f}"),
            "recall": table["recall"].map(lambda v: f"{v:.3f}"),
        }
    )
    return shown.set_index(["classifier", "dataset"])


def pooled_section(ctx: Context) -> Section | None:
    from ubsafe.report.pooled_f1 import dataset_name

    names = [dataset_name(run.root) for run in ctx.runs]
    if not ctx.several or len(set(names)) < len(names):
        return None
    section = Section("pooled", "Pooled over the runs' datasets")
    section.add(
        prose(
            """F1 of each classifier on each run's dataset, and `overall`: every image of every run
            pooled (PerspectiveVision's evaluation reports this over six datasets), with a 95 %
            multinomial bootstrap interval from the pooled confusion cells."""
        )
    )
    try:
        table = pooled_table(ctx)
    except (ValueError, FileNotFoundError) as exc:
        return section.add(prose(f"Not pooled: {exc}."))
    if table.empty:
        return section.add(prose("No predictions to pool (results/predictions.parquet absent)."))
    return section.add(Table(table, "F1 per dataset and pooled over all of them"))
