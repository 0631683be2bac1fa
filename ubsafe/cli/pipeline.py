"""`ubsafe plan | run | reduce | demo`: the pipeline on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ubsafe.cli.common import announce, config_flags, config_options, default_out
from ubsafe.targets import TARGET_NAMES, help_lines, runs_stage

#: The targets, from the one table in `ubsafe.targets`.
TARGET = click.Choice(TARGET_NAMES)
TARGETS_HELP = "\b\nTargets:\n" + help_lines()


def resolve_config(
    dataset: Path | None, out: Path | None, target: str, kwargs: dict[str, Any]
) -> Any:
    """Build the run config from defaults < dataset's ubsafe.toml < --config < flags."""
    from ubsafe.config import ConfigError, build_config, read_toml

    config_file = kwargs.get("config_file")
    if dataset is None:
        stored = read_toml(config_file).get("dataset") if config_file else None
        if not stored:
            raise ConfigError(
                "no DATASET given (and no `dataset` in --config): name the dataset to use"
            )
        dataset = Path(stored)
    flags = config_flags(kwargs)
    flags["out"] = str((out or default_out(dataset)).resolve())
    flags["target"] = target
    return build_config(dataset=dataset, config_file=config_file, flags=flags, announce=announce)


def result_notes(results_dir: Path) -> list[str]:
    """The notes the reduce left in summary.json (e.g. why tables are missing)."""
    import json

    try:
        summary = json.loads((results_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(note) for note in summary.get("notes", [])]


def prepare(config: Any, *, local: bool = False, before_writing: Any = None) -> Any:
    """Preflight checks in order (the dataset or prompts, names and options, data needs, every
    missing weight file), then `before_writing()` when given (submit's checks against the
    cluster), then plan (or reopen) the run. Nothing is written if a check fails.

    `local`: the work runs on this machine (`ubsafe run`, the demo), so a CUDA device it names
    must be visible here."""
    from ubsafe.stages.plan import plan_run
    from ubsafe.stages.preflight import (
        check_device,
        check_mitigation,
        check_names,
        check_weights,
        preflight,
    )

    if runs_stage(config.target, "generate"):
        from ubsafe.generate.plan import plan_mitigation, read_prompts

        prompts = read_prompts(config)
        check_names(config)
        check_device(config, local=local)
        check_mitigation(config)
        check_weights(config)
        if before_writing is not None:
            before_writing()
        return plan_mitigation(config, prompts=prompts)
    dataset = preflight(config, local=local)
    if before_writing is not None:
        before_writing()
    return plan_run(config, dataset=dataset)


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory (default output/<dataset name>).",
)
@config_options
def plan(dataset: Path, out: Path | None, **kwargs: Any) -> None:
    """Validate DATASET and write RUN/plan.parquet (samples → shards, by sample id)."""
    from ubsafe.stages.plan import plan_run
    from ubsafe.stages.preflight import preflight

    config = resolve_config(dataset, out, "effectiveness", kwargs)
    run = plan_run(config, dataset=preflight(config, weights=False))
    click.echo(f"{run.plan_path}: {len(run.plan)} samples in {run.n_shards} shard(s)")


@click.command(epilog=TARGETS_HELP)
@click.argument("stage", type=TARGET)
@click.argument("dataset", type=click.Path(path_type=Path), required=False)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory (default output/<dataset name>).",
)
@config_options
def run(stage: str, dataset: Path | None, out: Path | None, **kwargs: Any) -> None:
    """Run the target STAGE on DATASET here; missing shards only. For `mitigation`, DATASET is a
    prompt set (I2P CSV, prompt manifest, UnsafeBench directory's text, or builtin:demo)."""
    from ubsafe.launch.local import run_pipeline

    config = resolve_config(dataset, out, stage, kwargs)
    the_run = prepare(config, local=True)
    run_pipeline(the_run, stage, workers=config.workers)
    click.echo(f"{stage} done: {the_run.root}")
    if stage != "embed":
        from ubsafe.report import render_report

        click.echo(f"results: {the_run.results_dir}")
        for note in result_notes(the_run.results_dir):
            click.echo(f"note:    {note}")
        click.echo(f"report:  {render_report([the_run.root])}")


@click.command()
@click.argument(
    "run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--allow-missing/--no-allow-missing",
    default=False,
    help="Write results from the shards that exist, naming the missing ones.",
)
def reduce(run_dir: Path, allow_missing: bool) -> None:
    """Merge RUN's shard outputs into results/ (refuses when shards are missing)."""
    from ubsafe.rundir import Run
    from ubsafe.stages.reduce import reduce_run

    written = reduce_run(Run.load(run_dir), allow_missing=allow_missing)
    for path in written:
        click.echo(str(path))


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("output/demo"),
    show_default=True,
    help="Run directory.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("output/demo-data"),
    show_default=True,
    help="Demo dataset (made if absent).",
)
@click.option(
    "--n", "n", type=click.IntRange(min=22), default=2400, show_default=True, help="Images to make."
)
@click.option("--shard-size", type=click.IntRange(min=1), default=None, help="Samples per shard.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Shards run at once.")
@click.option("--target", type=TARGET, default="all", show_default=True, help="What to run.")
@click.option(
    "--mitigation/--no-mitigation",
    default=True,
    show_default=True,
    help="Also a small mitigation run: the built-in prompts through the tiny generators "
    "(tiny-sd, tiny-sld-max, tiny-safegen), judged by NudeNet, into OUT-mitigation.",
)
def demo(
    out: Path,
    data_dir: Path,
    n: int,
    shard_size: int | None,
    workers: int | None,
    target: str,
    mitigation: bool,
) -> None:
    """The main job on the embedded demo data: data, probes, NudeNet, robustness, report; and a
    small text-to-image mitigation run with the tiny generators."""
    from ubsafe.demo import run_demo, run_mitigation_demo
    from ubsafe.targets import runs_stage

    if runs_stage(target, "generate"):  # the generators' demo alone, into OUT
        click.echo(run_mitigation_demo(out=out, workers=workers or 1))
        return
    report = run_demo(
        out=out, data_dir=data_dir, n=n, shard_size=shard_size, workers=workers, target=target
    )
    if mitigation:
        report += "\n\n" + run_mitigation_demo(out=out.with_name(out.name + "-mitigation"))
    click.echo(report)
