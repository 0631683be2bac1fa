"""`ubsafe demo`: the main job end to end on the embedded default, offline, in a few minutes.

Makes the procedural demo dataset if absent, then runs the pipeline with the dataset's own
`ubsafe.toml` (tiny encoder, probes fitted on the train split — real-only and real + AI — and
NudeNet),
reduces with confidence intervals, renders the report and returns a text summary.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ubsafe.config import build_config

log = logging.getLogger(__name__)


def ensure_demo_data(data_dir: Path, n: int) -> Path:
    from ubsafe.data.demo import write_demo

    if (data_dir / "data").is_dir() and any((data_dir / "data").glob("*.parquet")):
        return data_dir
    log.info("writing %d demo images to %s", n, data_dir)
    return write_demo(data_dir, n=n, seed=0)


def run_demo(
    *,
    out: Path,
    data_dir: Path,
    n: int = 2400,
    shard_size: int | None = None,
    workers: int | None = None,
    target: str = "all",
) -> str:
    """Run the demo; return the summary text (tables and where the report is)."""
    from ubsafe.cli.pipeline import prepare
    from ubsafe.launch.local import run_pipeline

    ensure_demo_data(data_dir, n)
    flags = {
        "out": str(out.resolve()),
        "target": target,
        "shard_size": shard_size,
        "workers": workers or 2,
    }
    config = build_config(dataset=data_dir, flags=flags)
    run = prepare(config)
    run_pipeline(run, target, workers=config.workers)
    report = render(run)
    return summarise(run, report)


def render(run: object) -> Path | None:
    from ubsafe.report import render_report

    return render_report([run.root], run.report_dir)  # type: ignore[attr-defined]


def summarise(run: object, report: Path | None) -> str:
    results = run.results_dir  # type: ignore[attr-defined]
    table = pd.read_csv(results / "effectiveness.csv")
    overall = table[table["category"] == "overall"]
    lines = ["F1 with 95 % bootstrap intervals, pooled over each classifier's categories:", ""]
    pivot = overall.pivot(index="classifier", columns="source", values=["f1", "f1_lo", "f1_hi"])
    for classifier in pivot.index:
        cells = []
        for source in ("real", "ai", "all"):
            if ("f1", source) in pivot.columns:
                f1, lo, hi = (pivot.loc[classifier, (m, source)] for m in ("f1", "f1_lo", "f1_hi"))
                cells.append(f"{source} {f1:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append(f"  {classifier:<14} " + "   ".join(cells))
    robustness = results / "robustness.csv"
    if robustness.is_file():
        rob = pd.read_csv(robustness)
        if len(rob):
            worst = rob.sort_values("robust_accuracy").groupby("classifier").head(1)
            lines += ["", "Lowest Robust Accuracy per classifier:"]
            for row in worst.itertuples(index=False):
                lines.append(
                    f"  {row.classifier:<14} {row.perturbation} {row.severity:g} ({row.source}): "
                    f"{row.robust_accuracy:.3f} [{row.ra_lo:.3f}, {row.ra_hi:.3f}]"
                )
    lines += ["", f"results: {results}"]
    if report is not None:
        lines.append(f"report:  {report}")
    return "\n".join(lines)
