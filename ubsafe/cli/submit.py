"""`ubsafe submit STAGE DATASET --out RUN --partition P`: Slurm array jobs through submitit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ubsafe.cli.common import config_options
from ubsafe.cli.pipeline import TARGET, prepare, resolve_config


@click.command()
@click.argument("stage", type=TARGET)
@click.argument("dataset", type=click.Path(path_type=Path), required=False)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory on a shared filesystem (default output/<dataset name>).",
)
@click.option(
    "--partition", default=None, help="Slurm partition (required unless the profile sets one)."
)
@click.option(
    "--profile", default=None, help="Cluster profile: hpc/<name>.toml or a path (see hpc/)."
)
@click.option(
    "--gpus-per-task", type=click.IntRange(min=0), default=None, help="GPUs per array task."
)
@click.option(
    "--cpus-per-task", type=click.IntRange(min=1), default=None, help="CPUs per array task."
)
@click.option(
    "--mem", "mem_gb", type=click.FloatRange(min=0.1), default=None, help="Memory per task, GB."
)
@click.option(
    "--time",
    "time_min",
    type=click.IntRange(min=1),
    default=None,
    help="Time limit per task, minutes.",
)
@click.option("--account", default=None, help="Slurm account.")
@click.option(
    "--array-parallelism", type=click.IntRange(min=1), default=None, help="Array tasks at once."
)
@click.option(
    "--shards-per-task",
    type=click.IntRange(min=1),
    default=None,
    help="Shards per array task (default: 1, more when a stage has over 1000 shards).",
)
@click.option(
    "--report/--no-report", "with_report", default=True, help="Render the report as the last job."
)
@click.option(
    "--dry-run/--no-dry-run", default=False, help="Print the sbatch scripts; submit nothing."
)
@config_options
def submit(
    stage: str,
    dataset: Path | None,
    out: Path | None,
    partition: str | None,
    profile: str | None,
    shards_per_task: int | None,
    with_report: bool,
    dry_run: bool,
    **kwargs: Any,
) -> None:
    """Submit STAGE's missing shards of DATASET to Slurm (one array per stage, afterany
    dependencies).

    Plans and validates here first (nothing is submitted for a bad dataset or missing weights).
    Rerunning the same command submits only what is not done on disk.
    """
    from ubsafe.config import ConfigError
    from ubsafe.launch.profiles import load_profile
    from ubsafe.launch.slurm import submit as submit_jobs

    resource_flags = {
        k: kwargs.pop(k)
        for k in (
            "gpus_per_task",
            "cpus_per_task",
            "mem_gb",
            "time_min",
            "account",
            "array_parallelism",
        )
    }
    resource_flags["partition"] = partition
    chosen = load_profile(profile)
    if not (partition or chosen.defaults.partition):
        raise ConfigError("no partition: pass --partition P or a --profile that sets one")
    config = resolve_config(dataset, out, stage, kwargs)
    run = prepare(config)
    submissions = submit_jobs(
        run,
        stage,
        chosen,
        resource_flags,
        shards_per_task=shards_per_task,
        dry_run=dry_run,
        with_report=with_report,
    )
    for sub in submissions:
        if dry_run:
            for script in sub.scripts:
                click.echo(f"# --- {sub.stage}: sbatch script ({sub.shards} shard(s)) ---")
                click.echo(script)
        else:
            click.echo(
                f"{sub.stage:<8} {sub.shards} shard(s) in {sub.tasks} task(s), "
                f"jobs {', '.join(sub.job_ids)}"
            )
    if not submissions:
        click.echo("nothing to submit: every shard is done on disk")
    elif not dry_run:
        click.echo(f"follow with `ubsafe status {run.root}`")
