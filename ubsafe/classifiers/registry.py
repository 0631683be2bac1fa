"""The classifier registry: one TOML file per classifier in `registry/`, read and checked here.

An entry says what a classifier is (its paper name, the module that implements it), what it reads
(an embedding of which encoder, or the image), which categories the paper scores it on, where its
weights live on the Hugging Face hub, and whether it can be attacked or is trained within a run.
Adding a classifier means adding one file here and one module. Reading the registry imports no heavy
library, so `ubsafe classifiers` answers at once.
"""

from __future__ import annotations

import difflib
import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ubsafe.taxonomy import CATEGORIES, SOURCE_KINDS, SPLITS
from ubsafe.weights import WeightFile

REGISTRY_DIR = Path(__file__).with_name("registry")

#: `input` values: a cached embedding, or the decoded image itself.
INPUT_KINDS: tuple[str, ...] = ("embedding", "image")

#: `encoder` of a classifier fitted in the run: it reads the run's configured encoder.
RUN_ENCODER = "run"
#: `encoder` of an image classifier: it reads pixels, no encoder.
NO_ENCODER = "none"

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "paper_name": str,
    "module": str,
    "input": str,
    "encoder": str,
    "categories": list,
    "weights": list,
    "attackable": bool,
    "fitted": bool,
    "description": str,
    "notes": str,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "score": str,
    "options": dict,
    "file_options": list,
    "train_sources": list,
    "splits": list,
    "extra": str,
    "judge": dict,
}
_WEIGHT_KEYS = {"repo": str, "filename": str, "revision": str, "sha256": str, "size": int}


class JudgeSpec(BaseModel):
    """What makes a vision-language judge what it is: the `[judge]` table of its registry entry.

    Code asks these fields, never the judge's name: how answers are obtained, how it decodes under
    `vlm.decoding = "paper"`, which attacks it supports, what it reads and which files it needs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: how its answers are obtained: `generate` (an open model here), `query` (an OpenAI-compatible
    #: endpoint), `replay` (published answers); with several, the run setting `mode_setting` picks
    answers: tuple[Literal["generate", "query", "replay"], ...] = Field(min_length=1)
    #: the run setting that picks among `answers` (e.g. `gpt4v.mode`); "" with one way
    mode_setting: str = ""
    #: the model loader of `ubsafe.vlm.load.LOADERS` (generate and query)
    loader: str
    #: decoding under `vlm.decoding = "paper"`: `greedy`, or LAVIS's beam search (`lavis-beams`)
    paper_decoding: Literal["greedy", "lavis-beams"] = "greedy"
    #: targeted attacks on its answer (`ubsafe.attacks.judge_rows.ATTACKS`); empty: not attackable
    attacks: tuple[Literal["fgsm", "pgd"], ...] = ()
    #: whether its answers go through the response converter (RoBERTa files unless rules)
    converter: bool = True
    #: whether it needs a LoRA adapter: trained by the finetune stage, or `perspective.adapter`
    adapter: bool = False
    #: the checkpoint `ubsafe weights fetch` downloads whole (`ubsafe.vlm.registry.CHECKPOINTS`)
    checkpoint: str = ""
    #: whose published answers a replay reads (`ubsafe.vlm.replay.PUBLISHED_MODELS`)
    published: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> JudgeSpec:
        if len(self.answers) > 1 and not self.mode_setting:
            raise ValueError("several `answers` need a `mode_setting` that picks one")
        if "replay" in self.answers and not self.published:
            raise ValueError("a judge that replays answers names them: `published`")
        return self

    def mode(self, config: Any) -> str:
        """How this run obtains its answers (the run setting's value when there are several)."""
        if len(self.answers) == 1:
            return self.answers[0]
        return str(config.setting(self.mode_setting))

    def reads_images(self, config: Any) -> bool:
        return self.mode(config) != "replay"

    def runs_model_here(self, config: Any) -> bool:
        """Whether it runs a model on this machine (a GPU job), not an endpoint or a replay."""
        return self.mode(config) == "generate"


class RegistryError(ValueError):
    """A registry entry is malformed; the message names the file, the key and the fix."""


class UnknownClassifierError(KeyError):
    """A classifier name that is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the sentence instead
        return str(self.args[0])


@dataclass(frozen=True)
class ClassifierEntry:
    """One classifier as its registry file describes it."""

    name: str
    paper_name: str
    module: str
    input: str
    encoder: str
    categories: tuple[str, ...]
    weights: tuple[WeightFile, ...]
    attackable: bool
    fitted: bool
    description: str
    notes: str
    score: str = ""
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: options that name a file the classifier reads: only the user may set them, never a
    #: dataset's own ubsafe.toml
    file_options: tuple[str, ...] = ()
    train_sources: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    #: the optional part of ubsafe it needs (`ubsafe.extras.EXTRAS`), or ""
    extra: str = ""
    #: a vision-language judge's description (`[judge]`), None for other classifiers
    judge: JudgeSpec | None = None
    path: Path | None = None

    @property
    def network(self) -> bool:
        """Whether it can send images to a remote API (spending the user's credit): a judge that
        may query an endpoint. A dataset's own ubsafe.toml may not select it."""
        return self.judge is not None and "query" in self.judge.answers

    @property
    def is_image(self) -> bool:
        return self.input == "image"

    @property
    def scored_splits(self) -> tuple[str, ...]:
        """The splits it is scored on: `splits` when given, the test split for a classifier fitted
        in the run (it learned from the train split), else every split."""
        if self.splits:
            return self.splits
        return ("test",) if self.fitted else SPLITS


def parse_entry(path: str | os.PathLike[str]) -> ClassifierEntry:
    """Read and check one registry file; raise `RegistryError` naming the file and the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not valid TOML ({exc})") from None

    def fail(key: str, problem: str) -> RegistryError:
        return RegistryError(f"{path}: key {key!r} {problem}")

    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        valid = ", ".join(sorted([*_REQUIRED, *_OPTIONAL]))
        raise fail(unknown[0], f"is not a registry key (valid keys: {valid})")
    for key in _REQUIRED:
        if key not in data:
            raise fail(key, "is missing")
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key in data and not isinstance(data[key], kind):
            expected = kind.__name__ if isinstance(kind, type) else kind
            raise fail(key, f"must be a {expected}, got {type(data[key]).__name__} {data[key]!r}")

    name = data["name"]
    if name != path.stem:
        raise fail("name", f"is {name!r} but the file is named {path.name} (they must agree)")
    if data["input"] not in INPUT_KINDS:
        raise fail("input", f"is {data['input']!r}; must be one of {', '.join(INPUT_KINDS)}")
    if not data["module"].startswith("ubsafe."):
        raise fail("module", f"is {data['module']!r}; must be a module of the ubsafe package")

    categories = _check_list_of_str(data["categories"], "categories", fail)
    bad = [c for c in categories if c not in CATEGORIES]
    if bad:
        raise fail(
            "categories",
            f"has {bad[0]!r}, which is not a category (valid: {', '.join(CATEGORIES)}; "
            "spelled exactly as the dataset spells them)",
        )
    if not categories:
        raise fail("categories", "is empty; list the categories the classifier is scored on")

    weights = tuple(_parse_weight(item, i, fail) for i, item in enumerate(data["weights"]))

    is_image = data["input"] == "image"
    if is_image and data["encoder"] != NO_ENCODER:
        raise fail("encoder", f"must be {NO_ENCODER!r} for an image classifier")
    if not is_image and data["encoder"] == NO_ENCODER:
        raise fail("encoder", "must name an encoder registry key for an embedding classifier")
    if data["fitted"] and data["encoder"] != RUN_ENCODER:
        raise fail("encoder", f"must be {RUN_ENCODER!r} for a fitted classifier")

    train_sources = _check_list_of_str(data.get("train_sources", []), "train_sources", fail)
    bad = [s for s in train_sources if s not in SOURCE_KINDS]
    if bad:
        raise fail("train_sources", f"has {bad[0]!r}; must be among {', '.join(SOURCE_KINDS)}")
    if data["fitted"] and not train_sources:
        raise fail(
            "train_sources", "is missing; a fitted classifier names the sources it trains on"
        )
    if not data["fitted"] and train_sources:
        raise fail("train_sources", "is only for fitted classifiers")
    splits = _check_list_of_str(data.get("splits", []), "splits", fail)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise fail("splits", f"has {bad[0]!r}; must be among {', '.join(SPLITS)}")

    file_options = _check_list_of_str(data.get("file_options", []), "file_options", fail)
    bad = [o for o in file_options if o not in data.get("options", {})]
    if bad:
        raise fail("file_options", f"names {bad[0]!r}, which is not in [options]")

    extra = data.get("extra", "")
    if extra:
        from ubsafe.extras import EXTRAS

        if extra not in EXTRAS:
            raise fail("extra", f"is {extra!r}; must be one of {', '.join(EXTRAS)}")

    judge = None
    if "judge" in data:
        try:
            judge = JudgeSpec(**data["judge"])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise fail(f"judge.{where}" if where else "judge", first["msg"]) from None
        if data["attackable"] != bool(judge.attacks):
            raise fail(
                "attackable",
                f"is {str(data['attackable']).lower()} but [judge] attacks = "
                f"{list(judge.attacks)}; a judge is attackable exactly when it lists attacks",
            )

    return ClassifierEntry(
        name=name,
        paper_name=data["paper_name"],
        module=data["module"],
        input=data["input"],
        encoder=data["encoder"],
        categories=tuple(categories),
        weights=weights,
        attackable=data["attackable"],
        fitted=data["fitted"],
        description=data["description"].strip(),
        notes=data["notes"].strip(),
        score=data.get("score", "").strip(),
        options=MappingProxyType(dict(data.get("options", {}))),
        file_options=tuple(file_options),
        train_sources=tuple(train_sources),
        splits=tuple(splits),
        extra=extra,
        judge=judge,
        path=path,
    )


def _check_list_of_str(value: list[Any], key: str, fail: Any) -> list[str]:
    for item in value:
        if not isinstance(item, str):
            raise fail(key, f"must list strings, got {type(item).__name__} {item!r}")
    if len(set(value)) != len(value):
        raise fail(key, f"lists a value twice: {value}")
    return list(value)


def _parse_weight(item: Any, index: int, fail: Any) -> WeightFile:
    key = f"weights[{index}]"
    if not isinstance(item, dict):
        raise fail(key, "must be a table {repo = ..., filename = ...}")
    unknown = sorted(set(item) - set(_WEIGHT_KEYS))
    if unknown:
        raise fail(f"{key}.{unknown[0]}", f"is not a weight key (valid: {', '.join(_WEIGHT_KEYS)})")
    for sub in ("repo", "filename"):
        if not isinstance(item.get(sub), str) or not item[sub]:
            raise fail(f"{key}.{sub}", "is missing or not a non-empty string")
    if item["repo"].count("/") != 1:
        raise fail(f"{key}.repo", f"is {item['repo']!r}; must be 'owner/name' on the hub")
    return WeightFile(
        repo=item["repo"],
        filename=item["filename"],
        revision=item.get("revision"),
        sha256=item.get("sha256"),
        size=item.get("size"),
    )


def read_registry(directory: str | os.PathLike[str]) -> dict[str, ClassifierEntry]:
    """Every `*.toml` entry in `directory`, by name, sorted by name."""
    entries = [parse_entry(p) for p in Path(directory).glob("*.toml")]
    return {entry.name: entry for entry in sorted(entries, key=lambda e: e.name)}


@functools.cache
def _registry() -> dict[str, ClassifierEntry]:
    return read_registry(REGISTRY_DIR)


def list_classifiers() -> list[ClassifierEntry]:
    """All registered classifiers, sorted by name."""
    return list(_registry().values())


def get_entry(name: str) -> ClassifierEntry:
    """The entry called `name`; an unknown name raises, listing the valid ones."""
    registry = _registry()
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(registry)
        raise UnknownClassifierError(
            f"unknown classifier {name!r}; valid names: {valid} (see `ubsafe classifiers`)"
        ) from None


def replaying_judges(config: Any) -> list[tuple[str, str]]:
    """(name, the setting that chose it) of every judge of `config` that replays published answers
    (unknown names are left to the name check)."""
    out = []
    for name in config.classifiers:
        try:
            judge = get_entry(name).judge
        except KeyError:
            continue
        if judge is not None and judge.mode(config) == "replay":
            out.append((name, judge.mode_setting))
    return out


def run_weight_files(name: str, config: Any) -> list[WeightFile]:
    """The files a run with `config` needs for `name`: its entry's, plus the response converter's
    when it is a judge whose answers go through the converter and `vlm.converter = "roberta"`
    (`auto` falls back to the rules without them; `rules` needs none)."""
    entry = get_entry(name)
    files = list(entry.weights)
    if entry.judge is not None and entry.judge.converter and config.vlm.converter == "roberta":
        from ubsafe.vlm.registry import CONVERTER_FILES

        files += [f for f in CONVERTER_FILES if f not in files]
    return files


def weight_files(name: str) -> list[WeightFile]:
    """The hub files the classifier `name` loads (empty for fitted and self-contained ones)."""
    return list(get_entry(name).weights)


def missing_weights(name: str, weights_dir: str | os.PathLike[str]) -> list[Path]:
    """Local paths of `name`'s weight files that are absent from `weights_dir`."""
    return [
        wf.local_path(weights_dir)
        for wf in get_entry(name).weights
        if not wf.local_path(weights_dir).is_file()
    ]


def option_problems(entry: ClassifierEntry, overrides: Mapping[str, Any] | None) -> list[str]:
    """Every override that the entry's declared `[options]` do not allow: unknown keys, and
    values whose type differs from the documented default's (an int is accepted for a float; a
    list must hold the same kind of items as the default's)."""
    options = dict(entry.options)
    valid = ", ".join(options) or "none"
    problems = []
    for key, value in (overrides or {}).items():
        if key not in options:
            close = difflib.get_close_matches(key, options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown option {key!r}{hint}; {entry.name}'s options: {valid}")
            continue
        default = options[key]
        if default is not None and not _same_kind(value, default):
            problems.append(
                f"option {key} = {value!r} must be a {_kind(default)} like its default {default!r}"
            )
    return problems


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, list):
        if not isinstance(value, list):
            return False
        kinds = {type(item) for item in default}
        return not kinds or all(type(item) in kinds for item in value)
    return isinstance(value, type(default))


def _kind(default: Any) -> str:
    if isinstance(default, list) and default:
        return f"list of {type(default[0]).__name__}"
    return type(default).__name__


def resolve_options(entry: ClassifierEntry, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entry's default options updated by `overrides`; a bad key or type raises, naming them.

    The run config passes overrides per classifier (e.g. nudenet's `threshold`); the registry file
    holds the documented defaults, so its `[options]` table is also the list of valid keys and
    their types (preflight checks them all before any job: `option_problems`).
    """
    problems = option_problems(entry, overrides)
    if problems:
        raise ValueError(f"{entry.name}: " + "; ".join(problems))
    return {**dict(entry.options), **dict(overrides or {})}
