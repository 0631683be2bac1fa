"""`ubsafe data demo | check | fetch`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ubsafe.cli.common import F, image_options


def image_options_decorator(func: F) -> F:
    for option in reversed(image_options()):
        func = option(func)
    return func


#: `--format` values for prompt sets → `open_prompts` format
PROMPT_FORMATS = {"i2p": "i2p", "prompts": "manifest", "unsafebench-prompts": "unsafebench"}


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
    type=click.Choice(["auto", "unsafebench", "external", "manifest", *PROMPT_FORMATS]),
    default=None,
    help="Dataset layout (default: detected). Prompt sets: i2p, prompts (a prompt manifest),"
    " unsafebench-prompts (the text column of an UnsafeBench folder).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Run config with a [source_map] for other datasets' source names.",
)
@image_options_decorator
def check(
    dataset: Path,
    images: bool,
    dataset_format: str | None,
    config_file: Path | None,
    image_roots: str | None,
    max_image_mb: float | None,
) -> None:
    """Validate DATASET (images or prompts): print counts; exit 1 on any problem.

    A file with a `prompt` column, or a folder with I2P's CSV, is checked as a prompt set.
    """
    from ubsafe.prompts.readers import looks_like_prompts

    if dataset_format in PROMPT_FORMATS or (
        dataset_format in (None, "auto") and looks_like_prompts(dataset)
    ):
        _check_prompts(dataset, PROMPT_FORMATS.get(dataset_format or ""))
        return
    from ubsafe.cli.common import announce
    from ubsafe.config import build_config
    from ubsafe.data.checks import decode_failures, summary
    from ubsafe.data.dataset import open_dataset
    from ubsafe.data.files import ReadLimits
    from ubsafe.data.issues import DatasetError
    from ubsafe.escape import terminal

    def say(text: str, err: bool = False) -> None:
        click.echo(terminal(text), err=err)

    flags = {
        "dataset_format": dataset_format,
        "image_roots": image_roots,
        "max_image_mb": max_image_mb,
    }
    config = build_config(dataset=dataset, config_file=config_file, flags=flags, announce=announce)
    try:
        ds = open_dataset(
            dataset,
            fmt=config.dataset_format,
            source_map=config.source_map,
            limits=ReadLimits.from_config(config),
        )
    except DatasetError as exc:
        say(exc.describe(), err=True)
        sys.exit(1)
    say(f"{dataset}: {ds.format} layout, {len(ds.table)} samples, fingerprint {ds.fingerprint()}")
    for note in ds.notes:
        say(f"note: {note}")
    say(summary(ds.table))
    if images:
        failures = decode_failures(ds)
        if failures:
            say(f"{len(failures)} image(s) fail to decode (runs would skip them):", err=True)
            for sample_id, reason in failures:
                say(f"  {sample_id}: {reason}", err=True)
            sys.exit(1)
        say(f"all {len(ds.table)} images decode")


def _check_prompts(path: Path, fmt: str | None) -> None:
    from ubsafe.data.issues import DatasetError
    from ubsafe.escape import terminal
    from ubsafe.prompts import open_prompts
    from ubsafe.prompts.checks import summary

    try:
        prompt_set = open_prompts(path, fmt=fmt)
    except DatasetError as exc:
        click.echo(terminal(exc.describe()), err=True)
        sys.exit(1)
    click.echo(
        terminal(
            f"{path}: {prompt_set.kind} prompts, {len(prompt_set)} prompts,"
            f" fingerprint {prompt_set.fingerprint}"
        )
    )
    for note in prompt_set.notes:
        click.echo(terminal(f"note: {note}"))
    click.echo(terminal(summary(prompt_set)))


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
