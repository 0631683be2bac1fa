"""`ubsafe status RUN`: per stage, which shards are done, running, failed, interrupted, missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ubsafe.launch.status import ShardState, StageStatus
    from ubsafe.rundir import Run

#: Shards listed per stage and state unless --all.
LISTED = 10


@click.command()
@click.argument(
    "run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--scheduler/--no-scheduler",
    default=True,
    help="Add Slurm's view of the latest submission (extra information only).",
)
@click.option(
    "--traceback/--no-traceback", "tracebacks", default=False, help="Full tracebacks of failures."
)
@click.option("--all/--no-all", "show_all", default=False, help=f"List every shard, not {LISTED}.")
@click.option("--json/--no-json", "as_json", default=False, help="Machine-readable output.")
def status(run_dir: Path, scheduler: bool, tracebacks: bool, show_all: bool, as_json: bool) -> None:
    """Where RUN stands, read from its directory: per stage, shards done, running, failed (with
    error, job and log), interrupted (process gone: a relaunch redoes them) and missing.

    Exit status 0 when every stage is complete, 1 otherwise.
    """
    from ubsafe.launch.status import embed_skips, run_status
    from ubsafe.rundir import Run

    run = Run.load(run_dir)
    stages = run_status(run)
    skips = embed_skips(run)
    jobs: list[str] = []
    if scheduler:
        from ubsafe.launch.slurm_state import describe_jobs

        jobs = describe_jobs(run)
    complete = all(stage.complete for stage in stages)
    if as_json:
        document = {
            "run": str(run.root),
            "target": run.config.target,
            "config_hash": run.config.config_hash(),
            "complete": complete,
            "stages": [stage.to_json() for stage in stages],
            "skipped_images": skips,
            "scheduler": jobs,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        _print(run, stages, jobs, tracebacks=tracebacks, limit=None if show_all else LISTED)
        _print_skips(skips, limit=None if show_all else LISTED)
    if not complete:
        raise SystemExit(1)


def _print(
    run: Run, stages: list[StageStatus], jobs: list[str], *, tracebacks: bool, limit: int | None
) -> None:
    from ubsafe.escape import terminal
    from ubsafe.launch.status import STATES, age, last_frame

    def _echo(text: str) -> None:  # messages may quote dataset strings: controls shown escaped
        click.echo(terminal(text))

    _echo(
        f"{run.root}  target {run.config.target}  config {run.config.config_hash()}  "
        f"{len(run.plan)} samples in {run.n_shards} shard(s)"
    )
    for stage in stages:
        counts = "  ".join(f"{s} {stage.count(s)}" for s in STATES if stage.count(s))
        _echo(f"  {stage.stage:<8} {counts}")
        for shard in _limited(stage.of("failed"), limit, stage.stage, "failed"):
            error = shard.record or {}
            _echo(
                f"    shard {shard.shard} failed: {error.get('type', '?')}: "
                + _message(str(error.get("message", "")))
            )
            if tracebacks and error.get("traceback"):
                _echo("      " + str(error["traceback"]).rstrip().replace("\n", "\n      "))
            else:
                where = last_frame(str(error.get("traceback", "")))
                if where:
                    _echo(f"      at {where}")
            _echo(f"      job {error.get('job_id') or '-'} on {error.get('host', '?')}")
            _echo(f"      error {run.error_path(stage.stage, shard.shard)}")
            _echo(f"      log   {shard.log or run.log_path(stage.stage, shard.shard)}")
            if shard.slurm_log:
                _echo(f"      slurm {shard.slurm_log}")
        for state in ("running", "interrupted"):
            for shard in _limited(stage.of(state), limit, stage.stage, state):
                marker = shard.record or {}
                _echo(
                    f"    shard {shard.shard} {state}: pid {marker.get('pid')} on "
                    f"{marker.get('host')}, job {marker.get('job_id') or '-'}, "
                    f"started {age(marker)} ago"
                    + ("; a relaunch redoes it" if state == "interrupted" else "")
                )
    for line in jobs:
        _echo(line)


def _print_skips(skips: dict[str, dict[str, int]], limit: int | None) -> None:
    """Images the embed stage could not decode or convert, by reason (counts)."""
    for encoder, reasons in skips.items():
        total = sum(reasons.values())
        click.echo(
            f"  skipped {total} image(s) that could not be embedded ({encoder}; they go to "
            "results/skipped.csv):"
        )
        shown = list(reasons.items())
        for reason, count in shown[:limit] if limit else shown:
            click.echo(f"    {count:>6}  {_message(reason, max_lines=1)}")
        if limit and len(shown) > limit:
            click.echo(f"    ({len(shown) - limit} more reasons; --all lists every one)")


def _limited(
    items: list[ShardState], limit: int | None, stage: str, state: str
) -> list[ShardState]:
    if limit is None or len(items) <= limit:
        return items
    click.echo(
        f"    ({len(items)} {state} shards in {stage}; the first {limit}, --all for every one)"
    )
    return items[:limit]


def _message(message: str, max_lines: int = 8) -> str:
    """The error message, indented under its shard; long ones cut (error.json has it all)."""
    lines = message.strip().splitlines() or [""]
    shown = lines[:max_lines]
    if len(lines) > max_lines:
        shown.append(f"(+{len(lines) - max_lines} more lines in error.json)")
    return "\n      ".join(shown)
