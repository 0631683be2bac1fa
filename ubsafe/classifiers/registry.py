"""The classifier registry: one TOML file per classifier in `registry/`, read and checked here.

An entry says what a classifier is (its paper name, the module that implements it), what it reads
(an embedding of which encoder, or the image), which categories the paper scores it on, where its
weights live on the Hugging Face hub, and whether it can be attacked or is trained within a run.
Adding a classifier means adding one file here and one module. Reading the registry imports no heavy
library, so `ubsafe classifiers` answers at once.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

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
    "train_sources": list,
    "splits": list,
}
_WEIGHT_KEYS = {"repo": str, "filename": str, "revision": str, "sha256": str}


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
    train_sources: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    path: Path | None = None

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
        train_sources=tuple(train_sources),
        splits=tuple(splits),
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


def resolve_options(entry: ClassifierEntry, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entry's default options updated by `overrides`; an unknown key raises, naming the valid.

    The run config passes overrides per classifier (e.g. nudenet's `threshold`); the registry file
    holds the documented defaults, so its `[options]` table is also the list of valid keys.
    """
    options = dict(entry.options)
    for key, value in (overrides or {}).items():
        if key not in options:
            valid = ", ".join(options) or "none"
            raise ValueError(f"{entry.name}: unknown option {key!r} (valid options: {valid})")
        default = options[key]
        widened = isinstance(default, float) and isinstance(value, int)
        if default is not None and not isinstance(value, type(default)) and not widened:
            raise ValueError(
                f"{entry.name}: option {key!r} = {value!r} must be a "
                f"{type(options[key]).__name__} like its default {options[key]!r}"
            )
        options[key] = value
    return options
