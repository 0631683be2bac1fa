"""`ubsafe demo`: the main job end to end on the embedded default, offline, in a few minutes.

Makes the procedural demo dataset if absent, then runs the pipeline with the dataset's own
`ubsafe.toml` (tiny encoder, probes fitted on the train split — real-only and real + AI — and
NudeNet), reduces with confidence intervals, renders the report and returns a text summary.
`run_mitigation_demo` does the same for text-to-image mitigations: the built-in prompts through
the tiny generators (random weights, built locally in seconds), judged by NudeNet.
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
    run = prepare(config, local=True)
    run_pipeline(run, target, workers=config.workers)
    report = render(run)
    return summarise(run, report)


def render(run: object) -> Path | None:
    from ubsafe.report import render_report

    return render_report([run.root], run.report_dir)  # type: ignore[attr-defined]


def summarise(run: object, report: Path | None) -> str:
    """The headline numbers: F1 per classifier on real, AI-generated and all images; the weakest
    corruption and attack per classifier; where the files are."""
    import json
    import textwrap

    from ubsafe.findings import findings

    results = run.results_dir  # type: ignore[attr-defined]
    order = list(run.config.classifiers)  # type: ignore[attr-defined]
    table = pd.read_csv(results / "effectiveness.csv")
    overall = table[table["category"] == "overall"].set_index(["classifier", "source"])
    caveats = json.loads((results / "summary.json").read_text()).get("caveats", [])
    lines = [
        line
        for caveat in caveats
        for line in textwrap.wrap(caveat, 100, initial_indent="! ", subsequent_indent="  ")
    ]
    found = findings(results)
    if found:
        if lines:
            lines.append("")
        lines.append(
            "What the results show" + (" (on this data, with this encoder):" if caveats else ":")
        )
        lines += [
            line
            for finding in found
            for line in textwrap.wrap(finding, 100, initial_indent="- ", subsequent_indent="  ")
        ]
    lines += [
        "",
        "F1 (unsafe = positive) with 95 % bootstrap intervals, over each classifier's categories:",
        "",
    ]
    lines.append(f"  {'classifier':<16} {'real-world':<22} {'AI-generated':<22} {'all':<22}")
    for classifier in order:
        cells = []
        for source in ("real", "ai", "all"):
            if (classifier, source) in overall.index:
                row = overall.loc[(classifier, source)]
                cells.append(f"{row.f1:.3f} [{row.f1_lo:.3f}, {row.f1_hi:.3f}]".ljust(22))
            else:
                cells.append("-".ljust(22))
        never = (classifier, "all") in overall.index and overall.loc[
            (classifier, "all")
        ].tp + overall.loc[(classifier, "all")].fp == 0
        note = "  (never predicted unsafe here)" if never else ""
        lines.append(f"  {classifier:<16} " + " ".join(cells) + note)
    robustness = results / "robustness.csv"
    if robustness.is_file():
        rob = pd.read_csv(robustness)
        rob = rob[(rob["source"] == "all") & (rob["n"] > 0)]
        if len(rob):
            lines += [
                "",
                "Lowest Robust Accuracy (share of correct decisions that survive), all images:",
            ]
            for classifier in order:
                mine = rob[rob["classifier"] == classifier]
                for kind, part in (
                    ("corruption", mine[mine["family"] != "attack"]),
                    ("attack", mine[mine["family"] == "attack"]),
                ):
                    if part.empty:
                        continue
                    row = part.sort_values(["robust_accuracy", "perturbation"], kind="stable").iloc[
                        0
                    ]
                    level = (
                        f"severity {row.severity:g}"
                        if kind == "corruption"
                        else f"eps {row.severity:g}/255"
                    )
                    lines.append(
                        f"  {classifier:<16} {kind:<10} {row.perturbation} {level}: "
                        f"{row.robust_accuracy:.3f} [{row.ra_lo:.3f}, {row.ra_hi:.3f}] "
                        f"of {int(row.n)}"
                    )
    lines += ["", f"results: {results}"]
    if report is not None:
        lines.append(f"report:  {report}")
    return "\n".join(lines)


#: The mitigation demo: the tiny generators (no download) on the built-in prompts.
DEMO_GENERATORS = ("tiny-sd", "tiny-sld-max", "tiny-safegen")


def run_mitigation_demo(*, out: Path, images_per_prompt: int = 1, workers: int = 1) -> str:
    """A small mitigation run (seconds): generate, judge, reduce, report; return its summary."""
    from ubsafe.cli.pipeline import prepare
    from ubsafe.launch.local import run_pipeline

    flags = {
        "out": str(out.resolve()),
        "target": "mitigation",
        "generators": DEMO_GENERATORS,
        "images_per_prompt": images_per_prompt,
        "classifiers": ("nudenet",),
        "workers": workers,
    }
    config = build_config(dataset="builtin:demo", flags=flags)
    run = prepare(config)
    run_pipeline(run, "mitigation", workers=config.workers)
    (judge,) = config.classifiers
    generated = pd.read_parquet(run.results_dir / "generated.parquet")
    generation = pd.read_json(run.results_dir / "generation.json", typ="series")
    lines = [
        f"Mitigation demo: {int(generation['n_prompts'])} built-in prompts × "
        f"{len(DEMO_GENERATORS)} tiny generators × {images_per_prompt} image(s) "
        "(random weights: the images mean nothing, the path is the real one)",
        "",
        f"  {'generator':<16} {'images':>7} {f'unsafe ({judge})':>17}",
    ]
    for name in DEMO_GENERATORS:
        mine = generated[(generated["generator"] == name) & (generated["judge"] == judge)]
        lines.append(f"  {name:<16} {len(mine):>7} {int(mine['pred'].sum()):>17}")
    lines += ["", f"results: {run.results_dir}"]
    report = render(run)
    if report is not None:
        lines.append(f"report:  {report}")
    return "\n".join(lines)
