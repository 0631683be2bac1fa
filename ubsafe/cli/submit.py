"""`ubsafe submit`: placeholder until the Slurm launcher lands."""

from __future__ import annotations

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def submit() -> None:
    """Submit a stage to Slurm as array jobs via submitit (not available in this build)."""
    raise click.ClickException("`ubsafe submit` is not implemented in this build; use `ubsafe run`")
