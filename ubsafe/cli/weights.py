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
    help=(
        "Comma-separated encoder keys (default: the encoders the named --classifiers read; "
        "every encoder when no classifier is named)."
    ),
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
@click.option(
    "--generators",
    "generator_names",
    default=None,
    help=(
        "Comma-separated text-to-image generators (see `ubsafe generators`), fetched only when "
        "named (several GB each): their diffusers folders' safetensors, configs and tokenizer, "
        "never the pipelines' own safety checker. Generators sharing a base fetch it once."
    ),
)
@click.option("--force/--no-force", default=False, help="Download again even when present.")
@click.option(
    "--verify/--no-verify",
    default=True,
    help="Check every file against its pinned sha256 (where one is known).",
)
def fetch(
    to: Path,
    encoder_keys: str | None,
    classifier_names: str | None,
    generator_names: str | None,
    force: bool,
    verify: bool,
) -> None:
    """Download every encoder and classifier weight file from its real home into DIR."""
    from ubsafe import weights as w
    from ubsafe.vlm.registry import judge_classifiers

    keys = _split(encoder_keys)
    names = _split(classifier_names)
    if names is None:
        click.echo(
            f"VLM judges are fetched only when named: --classifiers {','.join(judge_classifiers())}"
        )
    unique = files_to_fetch(keys, names, _split(generator_names))
    known = [f.size for f in unique if f.size]
    size = f", about {_human(sum(known))}" if known else ""
    click.echo(f"fetching {len(unique)} file(s) into {to}{size}")
    unpinned = sorted({f.repo for f in unique if not f.revision})
    if unpinned:
        click.echo(f"not pinned to a revision (fetched from main): {', '.join(unpinned)}")
    unchecked = sum(1 for f in unique if not f.sha256)
    if verify and unchecked:
        click.echo(f"{unchecked} file(s) have no known sha256 and are not checked")
    for path in w.fetch(unique, to, force=force, check=verify):
        click.echo(f"  {path}")
    click.echo(f"done; use --weights-dir {to} (or export UBSAFE_WEIGHTS={to})")


def _human(size: float) -> str:
    from ubsafe.stages.preflight import human_size

    return human_size(size)


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def files_to_fetch(
    encoder_keys: list[str] | None,
    classifier_names: list[str] | None,
    generator_names: list[str] | None = None,
) -> list[WeightFile]:
    """The files `ubsafe weights fetch` downloads, in order, each once.

    Defaults: every classifier except the VLM judges (tens of GB each; named ones bring their
    whole checkpoint, the response converter and, for gpt4v, the published answers it replays);
    the encoders the classifiers read (every encoder when no classifier is named). Unknown names
    are refused, listing the valid ones. Generators only when named.
    """
    from ubsafe.classifiers import get_entry, list_classifiers
    from ubsafe.classifiers import weight_files as classifier_files
    from ubsafe.config import ConfigError
    from ubsafe.encoders import get_entry as get_encoder
    from ubsafe.encoders import list_encoders
    from ubsafe.encoders import weight_files as encoder_files
    from ubsafe.generate import weight_files as generator_files
    from ubsafe.inception import weight_files as fid_files
    from ubsafe.stages.preflight import encoders_implied, unknown_names
    from ubsafe.vlm.registry import fetch_files, judge_classifiers

    judges = judge_classifiers()

    problems = unknown_names(
        "--classifiers",
        "classifier",
        classifier_names or [],
        get_entry,
        [c.name for c in list_classifiers()],
        "ubsafe classifiers",
    ) + unknown_names(
        "--encoders",
        "encoder",
        encoder_keys or [],
        get_encoder,
        list(list_encoders()),
        "ubsafe encoders",
    )
    if problems:
        raise ConfigError("\n".join(problems))
    if classifier_names is None:
        names = [c.name for c in list_classifiers() if c.name not in judges]
    else:
        names = classifier_names
    if encoder_keys is not None:
        keys = encoder_keys
    elif classifier_names is not None:
        keys = encoders_implied(names)
    else:
        keys = list(list_encoders())
    files = [f for k in keys for f in encoder_files(k)]
    files += [f for n in names for f in classifier_files(n)]
    files += [f for n in names if n in judges for f in fetch_files(n)]
    files += [f for n in generator_names or () for f in generator_files(n)]
    if generator_names or classifier_names is None:  # FID/KID of generated images
        files += list(fid_files())
    return list(dict.fromkeys(files))
