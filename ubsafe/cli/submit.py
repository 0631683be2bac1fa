"""`ubsafe submit STAGE DATASET --out RUN --partition P`: Slurm array jobs through submitit."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ubsafe.cli.common import config_options
from ubsafe.cli.pipeline import TARGET, TARGETS_HELP, prepare, resolve_config

if TYPE_CHECKING:
    from ubsafe.config import RunConfig
    from ubsafe.launch.profiles import Profile

#: Flags that set what each array task asks Slurm for (they override the profile).
RESOURCE_FLAGS = (
    "partition",
    "gpus_per_task",
    "cpus_per_task",
    "mem_gb",
    "time_min",
    "account",
    "array_parallelism",
    "shards_per_task",
)


@click.command(epilog=TARGETS_HELP)
@click.argument("stage", type=TARGET)
@click.argument("dataset", type=click.Path(path_type=Path), required=False)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory, on a filesystem the compute nodes share (default output/<dataset>).",
)
@click.option(
    "--partition", default=None, help="Slurm partition (required unless the profile sets one)."
)
@click.option(
    "--profile",
    default=None,
    help="Cluster profile: a name in hpc/ (e.g. local, university-gpu) or a .toml path.",
)
@click.option(
    "--gpus-per-task",
    type=click.IntRange(min=0),
    default=None,
    help="GPUs per array task (not for the CPU-only stages fit and reduce).",
)
@click.option(
    "--cpus-per-task",
    type=click.IntRange(min=1),
    default=None,
    help="CPUs per array task; also its NUMBA_NUM_THREADS.",
)
@click.option(
    "--mem", "mem_gb", type=click.FloatRange(min=0.001), default=None, help="Memory per task, GB."
)
@click.option(
    "--time", "time_min", type=click.IntRange(min=1), default=None, help="Time limit per task, min."
)
@click.option("--account", default=None, help="Slurm account to charge.")
@click.option(
    "--array-parallelism",
    type=click.IntRange(min=1),
    default=None,
    help="Array tasks of one array running at once.",
)
@click.option(
    "--shards-per-task",
    type=click.IntRange(min=1),
    default=None,
    help="Shards per array task (default 1; more when a stage has over 1000 shards).",
)
@click.option(
    "--strict/--no-strict",
    default=False,
    help="Refuse (not only warn) a GPU stage without a GPU, or --out on a node-local path.",
)
@click.option(
    "--dry-run/--no-dry-run",
    default=False,
    help="Print the sbatch scripts it would submit; submit and write nothing.",
)
@config_options
def submit(
    stage: str,
    dataset: Path | None,
    out: Path | None,
    profile: str | None,
    dry_run: bool,
    strict: bool,
    **kwargs: Any,
) -> None:
    """Submit STAGE's missing shards of DATASET to Slurm: one array per stage, in order.

    Validates and plans here first: nothing is submitted for a bad dataset or missing weights.
    Each stage starts when the previous one has ended (`afterany`), so a failed shard does not
    stop the others; the reduce comes last and names what is missing, and the report follows a
    reduce that succeeded. Running the same command again submits only what is not done on disk
    (`ubsafe status RUN` shows where things stand).
    """
    from ubsafe.config import ConfigError
    from ubsafe.launch.profiles import load_profile

    flags = {name: kwargs.pop(name) for name in RESOURCE_FLAGS}
    chosen = load_profile(profile)
    if not (flags["partition"] or chosen.defaults.partition):
        raise ConfigError(
            "no Slurm partition: pass --partition P (`sinfo -s` lists them) "
            "or a --profile that sets one"
        )
    config = resolve_config(dataset, out, stage, kwargs)
    if dry_run:
        _dry_run(config, stage, chosen, flags, strict)
    else:
        _submit(config, stage, chosen, flags, strict)


def _submit(
    config: RunConfig, stage: str, profile: Profile, flags: dict[str, Any], strict: bool
) -> None:
    from ubsafe.launch.slurm import submit as submit_jobs

    run = prepare_submission(config, stage, profile, flags, strict)
    submitted = submit_jobs(run, stage, profile, flags)
    for sub in submitted:
        click.echo(
            f"{sub.stage:<8} {sub.shards} shard(s) in {sub.tasks} task(s): "
            f"job{'s' if len(sub.job_ids) > 1 else ''} {' '.join(sub.job_ids)}"
        )
    if not submitted:
        click.echo(f"nothing to submit: every shard of {stage} is done in {run.root}")
    else:
        click.echo(f"follow with `ubsafe status {run.root}`")


def prepare_submission(
    config: RunConfig, stage: str, profile: Profile, flags: dict[str, Any], strict: bool
) -> Any:
    """Preflight, then the requests against the cluster, then plan: nothing is written (no
    run.toml, no plan) for a mistake or a request the cluster can never run."""
    return prepare(config, before_writing=cluster_check(config, stage, profile, flags, strict))


def cluster_check(
    config: RunConfig, stage: str, profile: Profile, flags: dict[str, Any], strict: bool
) -> Any:
    """The check of the requests against the cluster, to run once preflight has passed."""
    from ubsafe.launch.slurm import check_cluster
    from ubsafe.rundir import Run

    def check() -> None:
        warn(check_cluster(Run(Path(config.out), config), stage, profile, flags, strict=strict))

    return check


def warn(warnings: list[str]) -> None:
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)


def _dry_run(
    config: RunConfig, stage: str, profile: Profile, flags: dict[str, Any], strict: bool
) -> None:
    from ubsafe.launch.slurm import submit as submit_jobs
    from ubsafe.rundir import RUN_TOML, Run

    root = Path(config.out)
    if (root / RUN_TOML).is_file():
        run = prepare_submission(config, stage, profile, flags, strict)
        submitted = submit_jobs(run, stage, profile, flags, dry_run=True)
    else:
        # A new run: plan it in a scratch directory so that a dry run leaves nothing behind.
        with tempfile.TemporaryDirectory(prefix="ubsafe-dry-run-") as scratch:
            scratch_config = config.model_copy(update={"out": str(Path(scratch) / root.name)})
            run = prepare(
                scratch_config, before_writing=cluster_check(config, stage, profile, flags, strict)
            )
            submitted = submit_jobs(
                run, stage, profile, flags, dry_run=True, shown_as=Run(root, config)
            )
    calls = 0
    for sub in submitted:
        for i, script in enumerate(sub.scripts):
            calls += 1
            click.echo(
                f"# --- {sub.stage}: sbatch {i + 1} of {len(sub.scripts)} "
                f"({sub.shards} shard(s) in {sub.tasks} task(s) for the stage) ---"
            )
            click.echo(script)
    shards = sum(s.shards for s in submitted)
    click.echo(f"# dry run: {calls} sbatch call(s) for {shards} shard(s); nothing submitted")
