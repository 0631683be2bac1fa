"""`ubsafe report`: placeholder until the report renderer lands."""

from __future__ import annotations

import click


@click.command()
@click.argument("runs", nargs=-1)
def report(runs: tuple[str, ...]) -> None:
    """Render tables and figures from results/ of one or more runs (not available in this build)."""
    raise click.ClickException(
        "`ubsafe report` is not implemented in this build; read RUN/results/*.csv"
    )
