"""Checks before any job is planned or submitted: names, weights, what the data must hold."""

from __future__ import annotations

from ubsafe.config import ConfigError, RunConfig
from ubsafe.data.dataset import Dataset


def encoders_needed(config: RunConfig) -> list[str]:
    """Every encoder the run's classifiers read embeddings from, the run's own encoder first."""
    from ubsafe.classifiers import get_entry

    keys = [config.encoder]
    for name in config.classifiers:
        entry = get_entry(name)
        if entry.input != "embedding":
            continue
        key = config.encoder if entry.encoder == "run" else entry.encoder
        if key not in keys:
            keys.append(key)
    return keys


def check_names(config: RunConfig) -> None:
    """Unknown classifiers, encoders or perturbations: one error listing the valid names."""
    from ubsafe.classifiers import get_entry
    from ubsafe.encoders import get_entry as get_encoder

    problems = []
    for name in config.classifiers:
        try:
            get_entry(name)
        except KeyError as exc:
            problems.append(str(exc.args[0]) if exc.args else str(exc))
    try:
        get_encoder(config.encoder)
    except KeyError as exc:
        problems.append(str(exc.args[0]) if exc.args else str(exc))
    if config.target in ("robustness", "all"):
        from ubsafe.perturb import get_perturbation

        for name in config.perturbations:
            try:
                get_perturbation(name)
            except KeyError as exc:
                problems.append(str(exc.args[0]) if exc.args else str(exc))
    if problems:
        raise ConfigError("\n".join(problems))


def check_weights(config: RunConfig) -> None:
    """Stop before any job when a weight file is missing, naming it and the fix."""
    from ubsafe import weights
    from ubsafe.classifiers import get_entry, weight_files
    from ubsafe.vlm.classifier import check_config

    check_config(config)  # VLM judges: responses to replay, adapters, converter files
    from ubsafe.encoders import weight_files as encoder_files

    for key in encoders_needed(config):
        weights.require(f"encoder {key}", encoder_files(key), config.weights_dir)
    for name in config.classifiers:
        if not get_entry(name).fitted:
            weights.require(f"classifier {name}", weight_files(name), config.weights_dir)


def check_dataset_needs(config: RunConfig, dataset: Dataset) -> None:
    """Fitted classifiers need labelled train rows of the source kinds they train on."""
    from ubsafe.classifiers import get_entry

    table = dataset.table
    for name in config.classifiers:
        entry = get_entry(name)
        if not entry.fitted:
            continue
        kinds = getattr(entry, "train_sources", ("real", "ai"))
        train = table[(table["split"] == "train") & table["source_kind"].isin(kinds)]
        if train.empty or train["label"].nunique() < 2:
            raise ConfigError(
                f"classifier {name} is fitted on the train split ({'/'.join(kinds)} sources), but "
                f"{dataset.root} has {len(train)} such rows"
                + (" of a single label" if len(train) else "")
                + ". fix: drop it from --classifiers, or use a dataset with a labelled train split"
            )
