"""`ubsafe weights fetch --to DIR`."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def weights() -> None:
    """Fetch encoder and classifier weights for offline compute nodes."""


@weights.command()
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Weights directory (then run jobs with --weights-dir DIR or UBSAFE_WEIGHTS=DIR).",
)
@click.option(
    "--encoders",
    "encoder_keys",
    default=None,
    help="Comma-separated encoder keys (default: every encoder with downloadable weights).",
)
@click.option(
    "--classifiers",
    "classifier_names",
    default=None,
    help="Comma-separated classifiers (default: every classifier with published weights).",
)
@click.option("--force/--no-force", default=False, help="Download again even when present.")
def fetch(to: Path, encoder_keys: str | None, classifier_names: str | None, force: bool) -> None:
    """Download every encoder and classifier weight file from its real home into DIR."""
    from ubsafe import weights as w
    from ubsafe.classifiers import list_classifiers
    from ubsafe.classifiers import weight_files as classifier_files
    from ubsafe.encoders import list_encoders
    from ubsafe.encoders import weight_files as encoder_files

    keys = encoder_keys.split(",") if encoder_keys else list(list_encoders())
    names = (
        classifier_names.split(",") if classifier_names else [c.name for c in list_classifiers()]
    )
    files = [f for k in keys for f in encoder_files(k)] + [
        f for n in names for f in classifier_files(n)
    ]
    unique = list(dict.fromkeys(files))
    click.echo(f"fetching {len(unique)} file(s) into {to}")
    for path in w.fetch(unique, to, force=force):
        click.echo(f"  {path}")
    click.echo(f"done; use --weights-dir {to} (or export UBSAFE_WEIGHTS={to})")
