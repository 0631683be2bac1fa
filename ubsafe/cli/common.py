"""Options shared by `run`, `submit`, `plan` and `demo`; errors shown without a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is the whole story (what, where, fix): shown as `Error: ...`, exit 1."""
    from ubsafe.config import ConfigError
    from ubsafe.data.hub import FetchError
    from ubsafe.data.issues import DatasetError
    from ubsafe.embeddings import IncompleteEmbeddings
    from ubsafe.launch.worker import ShardsFailed
    from ubsafe.stages.reduce import MissingShards
    from ubsafe.weights import MissingWeightsError

    return (
        ConfigError,
        DatasetError,
        FetchError,
        IncompleteEmbeddings,
        MissingShards,
        MissingWeightsError,
        ShardsFailed,
    )


def config_options(func: F) -> F:
    """Every flag that maps onto a `RunConfig` field (flags win over --config and ubsafe.toml)."""
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="TOML file with run settings (flags win over it).",
        ),
        click.option(
            "--format",
            "dataset_format",
            type=click.Choice(["auto", "unsafebench", "external", "manifest"]),
            default=None,
            help="Dataset layout (default: detected).",
        ),
        click.option(
            "--shard-size",
            type=click.IntRange(min=1),
            default=None,
            help="Samples per shard (default 256).",
        ),
        click.option(
            "--encoder",
            default=None,
            help="Encoder key for fitted classifiers (see `ubsafe encoders`).",
        ),
        click.option(
            "--classifiers",
            default=None,
            help="Comma-separated classifier names (see `ubsafe classifiers`).",
        ),
        click.option(
            "--perturbations", default=None, help="Comma-separated perturbations for robustness."
        ),
        click.option(
            "--seed", type=int, default=None, help="Seed for every random draw (default 0)."
        ),
        click.option(
            "--bootstrap",
            type=click.IntRange(min=100),
            default=None,
            help="Bootstrap replicates (default 10000).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="Shards run at once on this machine.",
        ),
        click.option(
            "--batch-size", type=click.IntRange(min=1), default=None, help="Encoder batch size."
        ),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:1, ..."),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Shared embedding cache (e.g. on scratch); default RUN/embeddings.",
        ),
        click.option(
            "--weights-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Weights directory (default $UBSAFE_WEIGHTS or ~/.cache/ubsafe/weights).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


CONFIG_FLAGS = (
    "dataset_format",
    "shard_size",
    "encoder",
    "classifiers",
    "perturbations",
    "seed",
    "bootstrap",
    "workers",
    "batch_size",
    "device",
    "cache_dir",
    "weights_dir",
)


def config_flags(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The config fields among a command's keyword arguments."""
    return {name: kwargs.get(name) for name in CONFIG_FLAGS}


def default_out(dataset: Path) -> Path:
    """`output/<dataset name>` under the current directory."""
    name = dataset.stem if dataset.is_file() else dataset.resolve().name
    return Path("output") / name
