"""Checks before anything is planned, written or submitted, in the order a user fixes things.

1. the dataset: its path, its format, every row (`DatasetError` lists every problem);
2. every name and option: classifiers, encoder, perturbations, attacks, `coverage`,
   `classifier_options` (keys and types against the registry entries' declared `[options]`),
   the device;
3. what the data must hold for the chosen classifiers (fitted ones need a labelled train split);
4. every missing weight file of every encoder and classifier, in one message, with the
   `ubsafe weights fetch` command that fetches just those.

Each step gathers all of its problems before it stops, so one launch shows one kind of mistake in
full. `run.toml` is written only after every step has passed (`prepare` in `ubsafe.cli.pipeline`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ubsafe.config import ConfigError, RunConfig
from ubsafe.data.dataset import Dataset
from ubsafe.extras import missing_extra
from ubsafe.targets import runs_stage
from ubsafe.weights import MissingWeightsError, WeightFile

#: Device strings a run accepts (what torch reads, without importing torch).
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def preflight(config: RunConfig, *, weights: bool = True, local: bool = False) -> Dataset:
    """Every check in order; return the validated dataset. Raises one error per step that fails.

    `local`: the run executes on this machine, so a CUDA device must be visible here.
    """
    from ubsafe.stages.plan import load_dataset

    dataset = load_dataset(config)
    check_names(config)
    check_device(config, local=local)
    check_dataset_needs(config, dataset)
    if weights:
        check_weights(config)
    return dataset


def encoders_needed(config: RunConfig) -> list[str]:
    """Every encoder the run's classifiers read embeddings from, the run's own encoder first (a
    mitigation run has no real-vs-AI shift to measure: only its classifiers' encoders)."""
    from ubsafe.classifiers import get_entry

    keys = [] if runs_stage(config.target, "generate") else [config.encoder]
    for name in config.classifiers:
        entry = get_entry(name)
        if entry.input != "embedding":
            continue
        key = config.encoder if entry.encoder == "run" else entry.encoder
        if key not in keys:
            keys.append(key)
    return keys


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def check_names(config: RunConfig) -> None:
    """Unknown names and bad options anywhere in the config: one error listing every problem."""
    from ubsafe.attacks.spec import ATTACK_NAMES
    from ubsafe.classifiers import get_entry, list_classifiers
    from ubsafe.encoders import get_entry as get_encoder
    from ubsafe.perturb.registry import list_perturbations, perturbation_info

    problems: list[str] = []
    problems += unknown_names(
        "--classifiers",
        "classifier",
        config.classifiers,
        get_entry,
        [c.name for c in list_classifiers()],
        "ubsafe classifiers",
    )
    if not config.classifiers:
        problems.append("--classifiers is empty: name at least one (see `ubsafe classifiers`)")
    try:
        get_encoder(config.encoder)
    except (KeyError, ValueError, ImportError) as exc:
        problems.append(f"--encoder: {_message(exc)}")
    problems += unknown_names(
        "--perturbations",
        "perturbation",
        config.perturbations,
        perturbation_info,
        [p.name for p in list_perturbations()],
        "ubsafe perturbations",
    )
    for name in config.attacks:
        if name not in ATTACK_NAMES:
            problems.append(
                f"attacks: unknown attack {name!r}; valid names: {', '.join(ATTACK_NAMES)}"
            )
    bad_eps = [eps for eps in config.attack.eps if not eps > 0]
    if bad_eps:
        problems.append(f"attack.eps: every budget must be > 0, got {bad_eps}")
    for name in config.classifiers:
        try:
            entry = get_entry(name)
        except (KeyError, ValueError):
            continue
        if entry.extra:
            problem = missing_extra(entry.extra, f"classifier {name}")
            if problem:
                problems.append(problem)
    problems += _coverage_problems(config)
    problems += _option_problems(config)
    if problems:
        raise ConfigError("\n".join(problems))


def unknown_names(
    flag: str,
    kind: str,
    names: Sequence[str],
    lookup: Any,
    valid: list[str],
    listing: str,
) -> list[str]:
    """One line naming every unknown name (with the closest valid one) and the valid names."""
    bad = []
    for name in names:
        try:
            lookup(name)
        except (KeyError, ValueError):
            close = difflib.get_close_matches(name, valid, n=1)
            bad.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if not bad:
        return []
    return [
        f"{flag}: unknown {kind}{'s' if len(bad) > 1 else ''} {', '.join(bad)}; "
        f"valid names: {', '.join(valid)} (see `{listing}`)"
    ]


def _known_classifier(name: str) -> str | None:
    """None when `name` is a classifier, else the message naming the valid ones."""
    from ubsafe.classifiers import get_entry

    try:
        get_entry(name)
    except (KeyError, ValueError) as exc:
        return _message(exc)
    return None


def _coverage_problems(config: RunConfig) -> list[str]:
    from ubsafe.taxonomy import CATEGORIES

    problems = []
    for name, categories in config.coverage.items():
        unknown = _known_classifier(name)
        if unknown:
            problems.append(f"[coverage] {name}: {unknown}")
            continue
        bad = [c for c in categories if c not in CATEGORIES]
        if bad:
            problems.append(
                f"[coverage] {name}: {bad[0]!r} is not a category; valid (spelled exactly): "
                f"{', '.join(CATEGORIES)}"
            )
    return problems


def _option_problems(config: RunConfig) -> list[str]:
    """`classifier_options` against each entry's declared `[options]`: every key and type."""
    from ubsafe.classifiers import get_entry, option_problems

    problems = []
    for name, overrides in config.classifier_options.items():
        unknown = _known_classifier(name)
        if unknown:
            problems.append(f"[classifier_options.{name}]: {unknown}")
            continue
        problems += [
            f"[classifier_options.{name}] {p}" for p in option_problems(get_entry(name), overrides)
        ]
    return problems


def check_device(config: RunConfig, *, local: bool) -> None:
    """`device` must be one torch reads; for a run here, a CUDA device must be visible here."""
    device = config.device
    if not _DEVICE.match(device):
        raise ConfigError(
            f"--device {device!r} is not a device; use auto (a GPU when one is visible), cpu, "
            "cuda, cuda:N or mps"
        )
    if local and device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            seen = f"{count} CUDA GPU(s) are visible" if count else "no CUDA GPU is visible"
            raise ConfigError(
                f"--device {device!r}: {seen} on this machine. fix: --device cpu (or auto), or "
                "run on a GPU node (`ubsafe submit ... --gpus-per-task 1`)"
            )


def check_weights(config: RunConfig) -> None:
    """Stop before any job when weight files are missing: every one of them in one message."""
    from ubsafe import weights
    from ubsafe.classifiers import get_entry
    from ubsafe.classifiers.registry import run_weight_files
    from ubsafe.encoders import weight_files as encoder_files
    from ubsafe.vlm.classifier import check_config

    weights_dir = Path(config.weights_dir)
    needs: list[tuple[str, list[WeightFile]]] = []
    for key in encoders_needed(config):
        needs.append((f"encoder {key}", encoder_files(key)))
    for name in config.classifiers:
        if not get_entry(name).fitted:
            needs.append((f"classifier {name}", run_weight_files(name, config)))
    missing: dict[Path, tuple[WeightFile, list[str]]] = {}
    for owner, files in needs:
        for wf in files:
            path = wf.local_path(weights_dir)
            if not path.is_file():
                missing.setdefault(path, (wf, []))[1].append(owner)
    try:
        check_config(config)  # VLM judges: responses to replay, adapters
    except MissingWeightsError as exc:
        for wf, path in exc.missing:
            missing.setdefault(path, (wf, []))[1].append(exc.owner)
    except FileNotFoundError as exc:
        if not missing:
            raise ConfigError(str(exc)) from None
    if missing:
        raise AllMissingWeights(list(missing.values()), weights_dir, config)
    # every file is present: check the recorded checksums (unless turned off)
    verify = None if config.verify_weights else False  # None: on unless UBSAFE_VERIFY_WEIGHTS=0
    for owner, files in needs:
        weights.require(owner, files, weights_dir, verify=verify)


class AllMissingWeights(MissingWeightsError):
    """Every missing file of a run, grouped by what needs it, with one targeted fetch command."""

    def __init__(
        self,
        missing: Sequence[tuple[WeightFile, list[str]]],
        weights_dir: Path,
        config: RunConfig,
    ):
        groups: dict[str, list[WeightFile]] = {}
        for wf, owners in missing:
            groups.setdefault(", ".join(owners), []).append(wf)
        total = sum(wf.size or 0 for wf, _ in missing)
        lines = [f"{len(missing)} weight file(s) missing from {weights_dir}:"]
        for label, files in groups.items():
            lines.append(f"  {label}:")
            lines += [f"    {wf.local_path(weights_dir)}{_size(wf)}" for wf in files]
        self.command = fetch_command(config, {o for _, names in missing for o in names})
        size = f" (about {human_size(total)} to download)" if total else ""
        lines.append(
            f"fix: `{self.command} --to {weights_dir}`{size} on a machine with internet access "
            "(a Hugging Face token for gated repos), or --weights-dir DIR where they already are"
        )
        self.owner = "run"
        self.missing = [(wf, wf.local_path(weights_dir)) for wf, _ in missing]
        FileNotFoundError.__init__(self, "\n".join(lines))


def fetch_command(config: RunConfig, owners: set[str]) -> str:
    """`ubsafe weights fetch --classifiers ... [--encoders ...]` for the owners with missing files:
    the classifiers (which bring their own encoders), and the other encoders by key."""
    from ubsafe.classifiers import get_entry

    lacking = {o.partition(" ")[2] for o in owners if o.startswith("encoder ")}
    classifiers = [
        name
        for name in config.classifiers
        if not get_entry(name).fitted
        and (f"classifier {name}" in owners or get_entry(name).encoder in lacking)
    ]
    implied = set(encoders_implied(classifiers))
    encoders = [key for key in encoders_needed(config) if key in lacking and key not in implied]
    command = "ubsafe weights fetch"
    if classifiers:
        command += f" --classifiers {','.join(classifiers)}"
    if encoders:
        command += f" --encoders {','.join(encoders)}"
    return command


def encoders_implied(classifiers: Sequence[str]) -> list[str]:
    """Encoders that `ubsafe weights fetch --classifiers ...` fetches with these classifiers."""
    from ubsafe.classifiers import get_entry
    from ubsafe.classifiers.registry import NO_ENCODER, RUN_ENCODER

    keys: list[str] = []
    for name in classifiers:
        key = get_entry(name).encoder
        if key not in (NO_ENCODER, RUN_ENCODER) and key not in keys:
            keys.append(key)
    return keys


def _size(wf: WeightFile) -> str:
    return f"  ({human_size(wf.size)})" if wf.size else ""


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def check_unlabelled(config: RunConfig, dataset: Dataset) -> None:
    """What a dataset without labels cannot do: fit or fine-tune classifiers, measure robustness."""
    from ubsafe.classifiers import get_entry
    from ubsafe.stages.finetune import trained as finetuned

    trained = [n for n in config.classifiers if get_entry(n).fitted or n in finetuned(config)]
    if trained:
        raise ConfigError(
            f"{dataset.root} has no labels, but {', '.join(trained)} "
            f"{'is' if len(trained) == 1 else 'are'} trained on this dataset's labelled train "
            "split. fix: drop them from --classifiers (or give perspective-llava a "
            "perspective.adapter), or label the dataset"
        )
    if runs_stage(config.target, "compare"):
        raise ConfigError(
            f"{dataset.root} has no labels, and target {config.target!r} measures Robust Accuracy "
            "of correctly judged images. fix: `ubsafe run effectiveness` scores every image "
            "without labels, or label the dataset"
        )


def check_dataset_needs(config: RunConfig, dataset: Dataset) -> None:
    """Fitted classifiers need labelled train rows of the source kinds they train on; robustness
    (Robust Accuracy, attacks on correctly judged images) needs labels; the paper's attack mode
    needs the sources it draws from."""
    from ubsafe.classifiers import get_entry
    from ubsafe.stages.attack import check_attack_sources

    if not dataset.labelled:
        check_unlabelled(config, dataset)
    table = dataset.table
    check_attack_sources(config, table)
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


def check_mitigation(config: RunConfig) -> None:
    """A mitigation run: known generators and judges, each judge's classifier in the run, no
    classifier that would need a labelled train split, every generator's weights present."""
    from ubsafe import weights
    from ubsafe.classifiers import get_entry
    from ubsafe.generate import get_generator
    from ubsafe.generate.judges import get_judge

    problems = [
        problem
        for problem in (
            missing_extra("generate", "generating images (the mitigation target)"),
            missing_extra("nudenet", "the detect stage (NudeNet on the generated images)"),
        )
        if problem
    ]
    if not config.generators:
        problems.append(
            "no generator given. fix: --generators sd-1.4,sld-max (see `ubsafe generators`)"
        )
    for name in config.generators:
        try:
            get_generator(name)
        except KeyError as exc:
            problems.append(str(exc))
    for name in config.judges or ():
        try:
            judge = get_judge(name)
        except KeyError as exc:
            problems.append(str(exc.args[0]))
            continue
        if judge.classifier not in config.classifiers:
            problems.append(
                f"judge {name} needs classifier {judge.classifier}, which is not in --classifiers. "
                f"fix: add {judge.classifier} to --classifiers, or leave {name} out of --judges"
            )
    for name in config.classifiers:
        try:
            fitted = get_entry(name).fitted
        except KeyError:
            continue  # named by check_names
        if fitted:
            problems.append(
                f"classifier {name} is fitted on a labelled train split, which generated images "
                "do not have. fix: drop it from --classifiers"
            )
    if problems:
        raise ConfigError("\n".join(problems))
    for name in config.generators:
        weights.require(f"generator {name}", get_generator(name).weight_files(), config.weights_dir)
