"""Options shared by `run`, `submit`, `plan` and `demo`; errors shown without a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is the whole story (what, where, fix): shown as `Error: ...`, exit 1."""
    from ubsafe.classifiers.probe import FittedWeightsMissingError
    from ubsafe.config import ConfigError
    from ubsafe.data.hub import FetchError
    from ubsafe.data.issues import DatasetError
    from ubsafe.embeddings import IncompleteEmbeddings
    from ubsafe.launch.worker import ShardsFailed
    from ubsafe.stages.reduce import MissingShards
    from ubsafe.weights import FetchError as WeightsFetchError
    from ubsafe.weights import MissingWeightsError, WeightsMismatch

    return (
        ConfigError,
        DatasetError,
        FetchError,
        FittedWeightsMissingError,
        IncompleteEmbeddings,
        MissingShards,
        MissingWeightsError,
        ShardsFailed,
        WeightsFetchError,
        WeightsMismatch,
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
        click.option(
            "--decode-workers",
            type=click.IntRange(min=0),
            default=None,
            help="Images decoded at once while the encoder runs (default 2; 0: inline).",
        ),
        click.option(
            "--decode-pool",
            type=click.Choice(["threads", "processes"]),
            default=None,
            help="CPU decoding in threads (default) or processes (where the GIL limits it).",
        ),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:1, ..."),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Shared embedding cache (e.g. on scratch); default RUN/embeddings.",
        ),
        click.option(
            "--generators",
            default=None,
            help="mitigation: comma-separated generators (see `ubsafe generators`).",
        ),
        click.option(
            "--images-per-prompt",
            type=click.IntRange(min=1),
            default=None,
            help="mitigation: images per prompt and generator (default 10).",
        ),
        click.option(
            "--seeding",
            type=click.Choice(["image", "i2p"]),
            default=None,
            help="mitigation: latents seeded per (prompt seed, image index), or I2P's stream.",
        ),
        click.option(
            "--steps",
            type=click.IntRange(min=1),
            default=None,
            help="mitigation: denoising steps (default: the generator's).",
        ),
        click.option(
            "--generation-batch",
            type=click.IntRange(min=1),
            default=None,
            help="mitigation: images per pipeline call on a GPU (default 8; CPU: 1).",
        ),
        click.option(
            "--generation-precision",
            type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
            default=None,
            help="mitigation: generator precision (auto: float16 on GPU, float32 on CPU).",
        ),
        click.option(
            "--judges",
            default=None,
            help="mitigation: composite judges (i2p; default: those whose parts the run has).",
        ),
        click.option(
            "--weights-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Weights directory (default $UBSAFE_WEIGHTS or ~/.cache/ubsafe/weights).",
        ),
        *image_options(),
        click.option(
            "--verify/--no-verify",
            "verify_weights",
            default=None,
            help="Check weight files against their pinned sha256 (default: on).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def image_options() -> list[Callable[[F], F]]:
    """Where a dataset may point for its image files, and how large one may be."""
    return [
        click.option(
            "--image-roots",
            default=None,
            help="Comma-separated folders outside the dataset's own from which a manifest may "
            "name images (absolute paths, ../, symlinks); default none.",
        ),
        click.option(
            "--max-image-mb",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Image files larger than this are skipped unread (default 64).",
        ),
    ]


def announce(line: str) -> None:
    """Print a line about the launch to stderr, control characters shown escaped."""
    from ubsafe.escape import terminal

    click.echo(terminal(line), err=True)


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
    "decode_workers",
    "decode_pool",
    "device",
    "cache_dir",
    "weights_dir",
    "generators",
    "images_per_prompt",
    "seeding",
    "steps",
    "generation_batch",
    "generation_precision",
    "judges",
    "image_roots",
    "max_image_mb",
    "verify_weights",
)


def config_flags(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The config fields among a command's keyword arguments."""
    return {name: kwargs.get(name) for name in CONFIG_FLAGS}


def default_out(dataset: Path) -> Path:
    """`output/<dataset name>` under the current directory."""
    if str(dataset).startswith("builtin:"):
        return Path("output") / str(dataset).split(":", 1)[1]
    name = dataset.stem if dataset.is_file() else dataset.resolve().name
    return Path("output") / name
