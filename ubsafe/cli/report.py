"""`ubsafe report RUN [RUN...] [--out DIR]`: render the results of one or more runs."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument(
    "runs",
    metavar="RUN [RUN...]",
    nargs=-1,
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default: the first RUN's report/).",
)
@click.option(
    "--thumbnails",
    type=click.Choice(["off", "blur"]),
    default="off",
    show_default=True,
    help="Generated images of mitigation runs: none, or heavily blurred thumbnails only.",
)
def report(runs: tuple[Path, ...], out: Path | None, thumbnails: str) -> None:
    """Render tables and figures from RUN/results/ into index.html, report.md and figures/.

    With several runs, each table holds them side by side, one sub-column per run. Prints the
    path of index.html.
    """
    from ubsafe.report import ReportError, render_report

    try:
        index = render_report(list(runs), out, thumbnails=thumbnails)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(index))
