"""The sections that say what was measured: the runs' facts and coverage, and what was skipped."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ubsafe.report import format as fmt
from ubsafe.report.context import Context, records
from ubsafe.report.document import Section, Table, Text
from ubsafe.report.tables import RUN, wide_table

#: summary.json keys shown first, with their display names; other keys follow, as spelled.
FACTS: tuple[tuple[str, str], ...] = (
    ("target", "target"),
    ("dataset", "dataset"),
    ("dataset_format", "dataset format"),
    ("fingerprint", "dataset fingerprint"),
    ("n_samples", "samples"),
    ("n_shards", "shards"),
    ("encoder", "encoder"),
    ("encoders", "encoders used"),
    ("classifiers", "classifiers"),
    ("bootstrap", "bootstrap replicates"),
    ("ci_level", "interval level"),
    ("seed", "seed"),
    ("attack_mode", "attack mode"),
    ("config_hash", "config hash"),
)
#: Skip reasons listed one by one; rarer ones are summed as "other".
MAX_REASONS = 20


def _fact(key: str, value: Any) -> str:
    if key == "fingerprint" and isinstance(value, str):
        return value[:16]
    if isinstance(value, list | tuple | dict) and not value:
        return "none"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fact(k, v)}" for k, v in sorted(value.items()))
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _facts(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary with its tables (e.g. `generation`) one row per entry: `generation.n_images`.

    Where the summary lists the encoders the run used, the configured one is shown only if used
    (a mitigation run judged by NudeNet alone reads no embeddings).
    """
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict) and value and key != "coverage":
            # a table's entry that repeats the run's own fact (its hash, target) is said once
            flat.update({f"{key}.{k}": v for k, v in value.items() if summary.get(k) != v})
        else:
            flat[key] = value
    if generates(summary):  # attacks are for classifiers on a dataset, not for generators
        for key in ("attack_mode", "not_attackable"):
            flat.pop(key, None)
    if "encoders" in flat:
        used = list(flat["encoders"])
        if flat.get("encoder") not in used:
            flat.pop("encoder", None)
        if used == [flat.get("encoder")]:
            flat.pop("encoders")  # the one configured: said once
        elif not used:
            flat["encoders"] = "none: no classifier of this run reads embeddings"
    return flat


def generates(summary: dict[str, Any]) -> bool:
    """Whether the run of `summary` generated images (its target runs `generate`)."""
    from ubsafe.targets import TARGETS, runs_stage

    target = str(summary.get("target") or "")
    return target in TARGETS and runs_stage(target, "generate")


def facts_table(ctx: Context) -> pd.DataFrame:
    """Fact × run, from each run's results/summary.json."""
    names = dict(FACTS)
    facts = [_facts(r.summary) for r in ctx.runs]
    keys = [k for k, _ in FACTS if any(k in f for f in facts)]
    keys += sorted({k for f in facts for k in f} - set(names) - {"coverage"})
    frame = pd.DataFrame(
        [[_fact(k, f[k]) if k in f else fmt.ABSENT for f in facts] for k in keys],
        index=pd.Index([names.get(k, k) for k in keys], name="fact"),
        columns=ctx.labels,
    )
    return frame


def coverage_table(ctx: Context) -> pd.DataFrame:
    """Classifier × run: the categories each classifier is scored on."""
    rows: list[dict[str, Any]] = []
    for run in ctx.runs:
        coverage = run.summary.get("coverage") or {}
        for name, categories in coverage.items():
            cats = list(categories)
            rows.append(
                {
                    "classifier": name,
                    "field": "categories",
                    RUN: run.label,
                    "cell": f"{len(cats)}: " + ", ".join(cats),
                }
            )
    frame = wide_table(
        records(rows), ["classifier"], ["field"], ctx.labels, orders=ctx.classifier_orders()
    )
    if not frame.empty and not ctx.several:
        frame.columns = ["covered categories"]
    return frame


def runs_section(ctx: Context) -> Section:
    section = Section("runs", "Runs")
    section.add(
        Text(
            "Each run's settings, from results/summary.json. "
            + " ".join(f"{r.label}: {r.root}." for r in ctx.runs)
        )
    )
    if not any(r.summary for r in ctx.runs):
        return section.add(Text("No results/summary.json in any run: settings unknown."))
    section.add(Table(facts_table(ctx), "Run settings", text=True))
    coverage = coverage_table(ctx)
    if not coverage.empty:
        section.add(Table(coverage, "Categories each classifier is scored on", text=True))
    return section


def skipped_table(ctx: Context) -> pd.DataFrame:
    """(stage, reason) × run: how many rows were not scored, and why."""
    rows: list[dict[str, Any]] = []
    for run, skipped in ctx.with_table("skipped"):
        counts = (
            skipped.groupby(["stage", "reason"])
            .size()
            .reset_index(name="n")
            .sort_values("n", ascending=False, kind="stable")
        )
        top, rest = counts.iloc[:MAX_REASONS], counts.iloc[MAX_REASONS:]
        for row in top.itertuples(index=False):
            rows.append(
                {"stage": row.stage, "reason": row.reason, RUN: run.label, "cell": f"{row.n:,}"}
            )
        for stage, n in rest.groupby("stage")["n"].sum().items():
            rows.append({"stage": stage, "reason": "other", RUN: run.label, "cell": f"{n:,}"})
        rows.append(
            {"stage": "all", "reason": "total", RUN: run.label, "cell": f"{len(skipped):,}"}
        )
    frame = wide_table(
        records(rows),
        ["stage", "reason"],
        [],
        ctx.labels,
        orders={"stage": ("plan", "embed", "perturb", "attack", "score", "compare", "all")},
    )
    if not frame.empty and not ctx.several:
        frame.columns = ["rows"]
    return frame


def skipped_section(ctx: Context) -> Section:
    section = Section("skipped", "Skipped rows")
    absent = ctx.without_table("skipped")
    if absent:
        section.add(
            Text(
                "No skipped-row list in "
                + ", ".join(r.label for r in absent)
                + " (results/skipped.csv absent)."
            )
        )
    present = list(ctx.with_table("skipped"))
    if not present:
        return section
    section.add(
        Text(
            "Rows that could not be scored, by stage and reason (every input row is scored, "
            "listed here from results/skipped.csv, or in results/unscored.csv when no classifier "
            "is meant to score it: the train split of classifiers trained on it, or a category "
            "no classifier covers)."
        )
    )
    frame = skipped_table(ctx)
    if all(skipped.empty for _, skipped in present):
        return section.add(Text("No row was skipped."))
    return section.add(Table(frame, "Skipped rows by stage and reason", text=True))
