"""`ubsafe data demo | check | fetch`."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def data() -> None:
    """Make, check and fetch datasets."""


@data.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=22),
    default=2400,
    show_default=True,
    help="Number of images.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Same seed, byte-identical files."
)
def demo(out: Path, n: int, seed: int) -> None:
    """Write a procedural dataset in the UnsafeBench Parquet layout (two styles, 11 categories)."""
    from ubsafe.data.demo import write_demo

    write_demo(out, n=n, seed=seed)
    click.echo(f"wrote {n} images to {out} (UnsafeBench layout, with a default ubsafe.toml)")


@data.command()
@click.argument("dataset", type=click.Path(exists=False, path_type=Path))
@click.option(
    "--images/--no-images", default=False, help="Also decode every image and list failures."
)
@click.option(
    "--format",
    "dataset_format",
    type=click.Choice(["auto", "unsafebench", "external", "manifest"]),
    default=None,
    help="Dataset layout (default: detected).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Run config with a [source_map] for other datasets' source names.",
)
def check(
    dataset: Path, images: bool, dataset_format: str | None, config_file: Path | None
) -> None:
    """Validate DATASET: print counts by category × source × label; exit 1 on any problem."""
    from ubsafe.config import build_config
    from ubsafe.data.checks import decode_failures, summary
    from ubsafe.data.dataset import open_dataset
    from ubsafe.data.issues import DatasetError

    config = build_config(
        dataset=dataset, config_file=config_file, flags={"dataset_format": dataset_format}
    )
    try:
        ds = open_dataset(dataset, fmt=config.dataset_format, source_map=config.source_map)
    except DatasetError as exc:
        click.echo(exc.describe(), err=True)
        sys.exit(1)
    click.echo(
        f"{dataset}: {ds.format} layout, {len(ds.table)} samples, fingerprint {ds.fingerprint()}"
    )
    for note in ds.notes:
        click.echo(f"note: {note}")
    click.echo(summary(ds.table))
    if images:
        failures = decode_failures(ds)
        if failures:
            click.echo(f"{len(failures)} image(s) fail to decode (runs would skip them):", err=True)
            for sample_id, reason in failures:
                click.echo(f"  {sample_id}: {reason}", err=True)
            sys.exit(1)
        click.echo(f"all {len(ds.table)} images decode")


@data.command()
@click.argument(
    "name", type=click.Choice(sorted(__import__("ubsafe.data.hub", fromlist=["DATASETS"]).DATASETS))
)
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Target directory.",
)
def fetch(name: str, to: Path) -> None:
    """Download a dataset from the Hugging Face hub (needs internet; gated sets need HF_TOKEN)."""
    from ubsafe.data.hub import fetch_dataset

    path = fetch_dataset(name, to)
    click.echo(f"{name} is in {path}; check it with `ubsafe data check {path}`")
