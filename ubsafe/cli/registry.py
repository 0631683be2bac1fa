"""`ubsafe classifiers | encoders | perturbations`: the registries, and whether weights are here."""

from __future__ import annotations

from pathlib import Path

import click

from ubsafe.config import default_weights_dir


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines)


def _present(files: list, weights_dir: Path) -> str:
    if not files:
        return "none needed"
    missing = [wf for wf in files if not wf.local_path(weights_dir).is_file()]
    return "present" if not missing else f"missing {len(missing)}/{len(files)}"


weights_dir_option = click.option(
    "--weights-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Weights directory to look in (default $UBSAFE_WEIGHTS or ~/.cache/ubsafe/weights).",
)


@click.command()
@weights_dir_option
def classifiers(weights_dir: Path | None) -> None:
    """Name, input, encoder, weights and covered categories of every classifier."""
    from ubsafe.classifiers import list_classifiers
    from ubsafe.classifiers.registry import run_weight_files
    from ubsafe.config import RunConfig

    defaults = RunConfig()  # the files a run with the default settings needs

    weights_dir = weights_dir or Path(default_weights_dir())
    rows = []
    for entry in list_classifiers():
        weights = (
            "fitted in the run"
            if entry.fitted
            else _present(run_weight_files(entry.name, defaults), weights_dir)
        )
        cats = "all 11" if len(entry.categories) == 11 else ", ".join(entry.categories)
        rows.append(
            [
                entry.name,
                entry.input,
                entry.encoder if entry.input == "embedding" else "-",
                weights,
                cats,
            ]
        )
    click.echo(_table(rows, ["name", "input", "encoder", "weights", "categories"]))
    click.echo(f"\nweights dir: {weights_dir}")


@click.command()
@weights_dir_option
def encoders(weights_dir: Path | None) -> None:
    """Key, model, input size, embedding size and weights of every encoder."""
    from ubsafe.encoders import get_entry, list_encoders, weight_files

    weights_dir = weights_dir or Path(default_weights_dir())
    rows = []
    for key in list_encoders():
        entry = get_entry(key)
        present = _present(weight_files(key), weights_dir)
        rows.append([key, entry.description, str(entry.embed_dim), present])
    click.echo(_table(rows, ["key", "model", "dim", "weights"]))
    click.echo("\nany open_clip model: openclip:<model>:<pretrained tag>")
    click.echo(f"weights dir: {weights_dir}")


@click.command()
def perturbations() -> None:
    """Every perturbation: family, severities, whether it runs batched."""
    from ubsafe.perturb import list_perturbations

    rows = [
        [
            p.name,
            p.family,
            ",".join(map(str, p.severities)),
            "yes" if p.batched else "per image",
            p.description,
        ]
        for p in list_perturbations()
    ]
    click.echo(_table(rows, ["name", "family", "severities", "batched", "description"]))


@click.command()
@weights_dir_option
def generators(weights_dir: Path | None) -> None:
    """Name, pipeline, weights and description of every text-to-image generator."""
    from ubsafe.generate import list_generators

    weights_dir = weights_dir or Path(default_weights_dir())
    rows = []
    for entry in list_generators():
        kind = f"sld-{entry.sld_preset}" if entry.pipeline == "sld" else "sd"
        if entry.unet:
            kind += " + unet"
        present = "built here" if entry.tiny else _present(list(entry.weight_files()), weights_dir)
        rows.append([entry.name, kind, present, entry.description])
    click.echo(_table(rows, ["name", "pipeline", "weights", "description"]))
    click.echo("\nfetch: ubsafe weights fetch --to DIR --generators NAME[,NAME...]")
    click.echo(f"weights dir: {weights_dir}")
