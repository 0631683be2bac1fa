"""`ubsafe status RUN`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument(
    "run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--scheduler/--no-scheduler", default=True, help="Add Slurm's view of submitted jobs, if any."
)
def status(run_dir: Path, scheduler: bool) -> None:
    """Per stage: shards done, running, failed (with error and log), interrupted, missing."""
    from ubsafe.launch.status import STATES, run_status
    from ubsafe.rundir import Run

    run = Run.load(run_dir)
    click.echo(
        f"{run.root}  target {run.config.target}  config {run.config.config_hash()}  "
        f"{len(run.plan)} samples in {run.n_shards} shard(s)"
    )
    incomplete = False
    for stage in run_status(run):
        counts = "  ".join(
            f"{state} {stage.count(state)}" for state in STATES if stage.count(state)
        )
        click.echo(f"  {stage.stage:<8} {counts}")
        for shard in stage.of("failed"):
            error = shard.error or {}
            click.echo(
                f"    shard {shard.shard}: {error.get('type', '?')}: {error.get('message', '')}"
            )
            click.echo(f"      job {error.get('job_id')}  log {shard.log}")
        for shard in stage.of("interrupted"):
            click.echo(
                f"    shard {shard.shard}: interrupted (process {shard.running}); rerun to redo it"
            )
        incomplete |= any(s.state != "done" for s in stage.shards)
    if scheduler:
        from ubsafe.launch.slurm_state import describe_jobs

        for line in describe_jobs(run):
            click.echo(line)
    if incomplete:
        raise SystemExit(1)
