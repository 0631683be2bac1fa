"""The encoder registry: one JSON file per entry, as open_clip keeps one JSON per architecture.

An entry says which model to build, where its weights live on the Hugging Face hub, and the
preprocessing its own transform applies (declared here so that the cache key of its embeddings is
known without loading anything; the loader checks the declaration against the built transform).

Keys:
- the files in `ubsafe/encoders/registry/` (`vit-l-14-openai`, `sd-checker`, `tiny`) and in any
  folder added with `add_registry_path`;
- `openclip:<model>:<tag>` for any model and pretrained tag in open_clip's own table (the entry is
  derived from that table; this form imports open_clip).

This module is light: it imports neither torch nor open_clip unless a generic key is resolved.
"""

from __future__ import annotations

import json
import os
import posixpath
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ubsafe.weights import WeightFile

#: The folder of the built-in entries.
BUILTIN_REGISTRY = Path(__file__).with_name("registry")

#: Prefix of the generic form `openclip:<model>:<tag>`.
GENERIC_PREFIX = "openclip:"

_extra_paths: list[Path] = []


class WeightSpec(BaseModel):
    """One file of an entry on its Hugging Face home."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: str
    filename: str
    revision: str | None = None
    sha256: str | None = None
    #: approximate download size in bytes, where known
    size: int | None = None

    def to_weight_file(self) -> WeightFile:
        return WeightFile(
            self.repo, self.filename, revision=self.revision, sha256=self.sha256, size=self.size
        )


class Preprocess(BaseModel):
    """What the encoder's own transform does to a PIL image before normalisation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: open_clip's torchvision transform, or transformers' PIL image processor.
    pipeline: Literal["open_clip", "clip_image_processor_pil"]
    resize_mode: Literal["shortest", "longest", "squash"] = "shortest"
    #: Target of the resize: the shortest edge for `shortest`, the longest for `longest`.
    resize: int = Field(gt=0)
    crop: int = Field(gt=0)
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class EncoderEntry(BaseModel):
    """A validated registry entry."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, protected_namespaces=()
    )

    key: str
    description: str
    family: Literal["open_clip", "sd_checker"]
    #: open_clip architecture name (a built-in config, or the stem of `model_config`).
    model: str | None = None
    #: A custom open_clip config file (absolute once loaded; relative to the entry file in JSON).
    model_config_path: str | None = Field(default=None, alias="model_config")
    #: open_clip pretrained tag the weights correspond to (for its preprocessing table).
    pretrained: str | None = None
    #: Build the towers with QuickGELU whatever the named config says (OpenAI weights need it).
    quick_gelu: bool = False
    #: `checkpoint`: weights from `weights`; `deterministic`: ubsafe's seed-free hashed init.
    init: Literal["checkpoint", "deterministic"] = "checkpoint"
    weights: tuple[WeightSpec, ...] = ()
    embed_dim: int = Field(gt=0)
    preprocess: Preprocess
    #: Where the entry came from (a file path, or `open_clip pretrained table`).
    source: str = ""

    @model_validator(mode="after")
    def _check_family(self) -> EncoderEntry:
        if self.family == "open_clip":
            if not self.model:
                raise ValueError(
                    "an open_clip entry needs `model` (an open_clip architecture name)"
                )
            if self.init == "checkpoint" and len(self.weights) != 1:
                raise ValueError(
                    "an open_clip entry with init 'checkpoint' needs exactly one weight file"
                )
            if self.init == "deterministic" and self.weights:
                raise ValueError("an entry with init 'deterministic' has no weight files")
        if self.family == "sd_checker":
            names = {w.filename for w in self.weights}
            need = {"config.json", "preprocessor_config.json"}
            if not need <= names or len(self.weights) != 3:
                raise ValueError(
                    "an sd_checker entry needs config.json, preprocessor_config.json and one "
                    f"checkpoint file in `weights`, got {sorted(names)}"
                )
        return self

    @property
    def model_config_file(self) -> Path | None:
        return Path(self.model_config_path) if self.model_config_path else None

    def weight_files(self) -> list[WeightFile]:
        return [spec.to_weight_file() for spec in self.weights]

    def weight_file(self, filename: str) -> WeightFile:
        """The entry's file called `filename` (sd_checker: config, preprocessor, checkpoint)."""
        for spec in self.weights:
            if spec.filename == filename:
                return spec.to_weight_file()
        raise KeyError(f"{self.key}: no weight file named {filename!r}")

    def checkpoint_file(self) -> WeightFile:
        """The file holding the model weights."""
        configs = {"config.json", "preprocessor_config.json"}
        files = [spec for spec in self.weights if spec.filename not in configs]
        if len(files) != 1:
            raise ValueError(f"{self.key}: expected one checkpoint file, got {files}")
        return files[0].to_weight_file()


class UnknownEncoderError(KeyError):
    """A key that names no registry entry; the message lists the valid ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def add_registry_path(path: str | os.PathLike[str]) -> None:
    """Add a folder of entry files (or one file), as `open_clip.add_model_config` does."""
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"encoder registry path {path} does not exist")
    if path not in _extra_paths:
        _extra_paths.append(path)
    _entry_files.cache_clear()


def _registry_paths() -> list[Path]:
    return [BUILTIN_REGISTRY, *_extra_paths]


@cache
def _entry_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for folder in _registry_paths():
        candidates = [folder] if folder.is_file() else sorted(folder.glob("*.json"))
        for path in candidates:
            files[path.stem] = path  # later paths override built-ins, as open_clip's rescan does
    return files


def list_encoders() -> list[str]:
    """The keys of all entry files (the generic `openclip:<model>:<tag>` form is accepted too)."""
    return sorted(_entry_files())


def get_entry(key: str) -> EncoderEntry:
    """The entry for `key`; an unknown key raises `UnknownEncoderError` listing the valid ones."""
    if key.startswith(GENERIC_PREFIX):
        return _generic_entry(key)
    files = _entry_files()
    if key not in files:
        raise UnknownEncoderError(
            f"unknown encoder {key!r}; valid keys: {', '.join(sorted(files))}, or "
            f"'{GENERIC_PREFIX}<model>:<tag>' for any open_clip pretrained model "
            "(see `ubsafe encoders`)"
        )
    return _read_entry(files[key])


def weight_files(key: str) -> list[WeightFile]:
    """Every file the encoder needs from the hub (weights, and configs needed offline)."""
    return get_entry(key).weight_files()


def missing_weights(key: str, weights_dir: str | os.PathLike[str]) -> list[Path]:
    """Local paths of the files of `key` that are absent from `weights_dir`."""
    paths = [wf.local_path(weights_dir) for wf in weight_files(key)]
    return [path for path in paths if not path.is_file()]


def _read_entry(path: Path) -> EncoderEntry:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"encoder registry file {path}: cannot be read as JSON: {exc}") from None
    data = {"key": path.stem, "source": str(path), **data}
    if data.get("model_config"):
        data["model_config"] = str((path.parent / data["model_config"]).resolve())
    try:
        return EncoderEntry.model_validate(data)
    except ValidationError as exc:
        raise ValueError(
            f"encoder registry file {path} is invalid (fix the file):\n{exc}"
        ) from None


def _generic_entry(key: str) -> EncoderEntry:
    """Derive an entry from open_clip's pretrained table for `openclip:<model>:<tag>`."""
    parts = key[len(GENERIC_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        raise UnknownEncoderError(
            f"encoder key {key!r} is malformed; the generic form is "
            f"'{GENERIC_PREFIX}<model>:<tag>', e.g. '{GENERIC_PREFIX}ViT-B-32:laion2b_s34b_b79k'"
        )
    model, tag = parts
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model)
    if not tags:
        raise UnknownEncoderError(
            f"encoder key {key!r}: open_clip {open_clip.__version__} has no pretrained weights for "
            f"model {model!r}; models with weights: {', '.join(sorted(_open_clip_models()))}"
        )
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        raise UnknownEncoderError(
            f"encoder key {key!r}: open_clip has no tag {tag!r} for {model}; its tags: "
            f"{', '.join(tags)}"
        )
    model_cfg = open_clip.get_model_config(model)
    if model_cfg is None:
        raise UnknownEncoderError(f"encoder key {key!r}: open_clip has no config for {model!r}")
    return EncoderEntry(
        key=key,
        description=f"open_clip {model}, pretrained tag {tag}",
        family="open_clip",
        model=model,
        pretrained=tag,
        quick_gelu=bool(cfg.get("quick_gelu", False)) or bool(model_cfg.get("quick_gelu", False)),
        weights=(_hub_weight(key, cfg),),
        embed_dim=int(model_cfg["embed_dim"]),
        preprocess=open_clip_preprocess(model_cfg, cfg),
        source=f"open_clip {open_clip.__version__} pretrained table",
    )


def _open_clip_models() -> set[str]:
    import open_clip

    return {name for name, _ in open_clip.list_pretrained()}


def _hub_weight(key: str, pretrained_cfg: dict[str, Any]) -> WeightSpec:
    """The file open_clip 3.x downloads for a tag: its hub file, or the safetensors default."""
    hub = str(pretrained_cfg.get("hf_hub") or "")
    if not hub:
        raise UnknownEncoderError(
            f"encoder key {key!r}: this tag has no Hugging Face home (only "
            f"{pretrained_cfg.get('url') or 'no URL'}); ubsafe fetches weights from the hub only, "
            "so pick another tag"
        )
    repo, filename = posixpath.split(hub)  # as open_clip: 'org/repo/' or 'org/repo/file'
    if not filename:
        # For a bare repo open_clip tries its safetensors file first (HF_SAFE_WEIGHTS_NAME).
        filename = "open_clip_model.safetensors"
    return WeightSpec(repo=repo, filename=filename)


def open_clip_preprocess(model_cfg: dict[str, Any], pretrained_cfg: dict[str, Any]) -> Preprocess:
    """The val transform open_clip builds for a model config and a pretrained tag's table row."""
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    if not isinstance(size, int):
        if len(set(size)) != 1:
            raise ValueError(f"non-square image size {size} is not supported by ubsafe encoders")
        size = int(size[0])
    return Preprocess(
        pipeline="open_clip",
        resize_mode=pretrained_cfg.get("resize_mode", "shortest"),
        resize=size,
        crop=size,
        interpolation=pretrained_cfg.get("interpolation", "bicubic"),
        mean=tuple(pretrained_cfg.get("mean", _OPENAI_MEAN)),
        std=tuple(pretrained_cfg.get("std", _OPENAI_STD)),
    )


# open_clip's constants (constants.py), repeated so this module need not import torch.
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
