"""`ubsafe weights fetch --to DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ubsafe.weights import WeightFile


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
    help=(
        "Comma-separated classifiers (default: every classifier with published weights except "
        "the VLM judges llava, instructblip, gpt4v, perspective-llava, which are fetched when "
        "named: whole checkpoints, the response converter, GPT-4V's published answers)."
    ),
)
@click.option("--force/--no-force", default=False, help="Download again even when present.")
def fetch(to: Path, encoder_keys: str | None, classifier_names: str | None, force: bool) -> None:
    """Download every encoder and classifier weight file from its real home into DIR."""
    from ubsafe import weights as w
    from ubsafe.vlm.registry import JUDGE_CLASSIFIERS

    keys = _split(encoder_keys)
    names = _split(classifier_names)
    if names is None:
        click.echo(
            f"VLM judges are fetched only when named: --classifiers {','.join(JUDGE_CLASSIFIERS)}"
        )
    unique = files_to_fetch(keys, names)
    click.echo(f"fetching {len(unique)} file(s) into {to}")
    for path in w.fetch(unique, to, force=force):
        click.echo(f"  {path}")
    click.echo(f"done; use --weights-dir {to} (or export UBSAFE_WEIGHTS={to})")


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def files_to_fetch(
    encoder_keys: list[str] | None, classifier_names: list[str] | None
) -> list[WeightFile]:
    """The files `ubsafe weights fetch` downloads, in order, each once.

    Defaults: every encoder, and every classifier except the VLM judges (tens of GB each; named
    ones bring their whole checkpoint, the response converter and, for gpt4v, the published
    answers it replays).
    """
    from ubsafe.classifiers import list_classifiers
    from ubsafe.classifiers import weight_files as classifier_files
    from ubsafe.encoders import list_encoders
    from ubsafe.encoders import weight_files as encoder_files
    from ubsafe.vlm.registry import JUDGE_CLASSIFIERS, fetch_files

    keys = encoder_keys if encoder_keys is not None else list(list_encoders())
    if classifier_names is None:
        names = [c.name for c in list_classifiers() if c.name not in JUDGE_CLASSIFIERS]
    else:
        names = classifier_names
    files = [f for k in keys for f in encoder_files(k)]
    files += [f for n in names for f in classifier_files(n)]
    files += [f for n in names if n in JUDGE_CLASSIFIERS for f in fetch_files(n)]
    return list(dict.fromkeys(files))
