"""The generator registry: one TOML file per text-to-image generator in `registry/`.

An entry names the pipeline kind (`sd`: diffusers' `StableDiffusionPipeline`; `sld`:
`StableDiffusionPipelineSafe` with one of ubsafe's SLD presets), the repository whose diffusers
layout holds the text encoder, tokenizer, VAE, scheduler and UNet (`base`), optionally another
repository whose `unet/` replaces the base's (SafeGen), a negative prompt, and the defaults for
steps, guidance and size. `tiny = true` entries are built locally (random weights, no download).
Reading the registry imports no heavy library.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ubsafe.generate.presets import SLD_PRESETS
from ubsafe.weights import WeightFile

REGISTRY_DIR = Path(__file__).with_name("registry")

#: The files of a Stable Diffusion repository in the diffusers layout that a generator reads
#: (safetensors only; the pipeline's own safety checker is never loaded).
BASE_FILES: tuple[str, ...] = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
UNET_FILES: tuple[str, ...] = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors")


class RegistryError(ValueError):
    """A malformed generator entry; the message names the file and the key."""


class UnknownGeneratorError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class GeneratorEntry(BaseModel):
    """One generator as its registry file describes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    pipeline: Literal["sd", "sld"]
    base: str
    unet: str = ""
    sld_preset: str = ""
    #: "" (the prompt file's own negative prompt, if any) or "safety_concept" (SLD's concept)
    negative_prompt: Literal["", "safety_concept"] = ""
    steps: int = Field(default=50, ge=1)
    guidance: float = Field(default=7.5, ge=0.0)
    width: int = Field(default=512, ge=8)
    height: int = Field(default=512, ge=8)
    tiny: bool = False
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> GeneratorEntry:
        if self.pipeline == "sld" and self.sld_preset not in SLD_PRESETS:
            raise ValueError(
                f"sld_preset {self.sld_preset!r} is not one of {', '.join(SLD_PRESETS)}"
            )
        if self.pipeline == "sd" and self.sld_preset:
            raise ValueError("sld_preset needs pipeline = 'sld'")
        return self

    def weight_files(self) -> tuple[WeightFile, ...]:
        """What `ubsafe weights fetch` downloads for this generator (none for tiny ones)."""
        if self.tiny:
            return ()
        files = [WeightFile(self.base, f) for f in BASE_FILES]
        if self.unet:
            files = [f for f in files if not f.filename.startswith("unet/")]
            files += [WeightFile(self.unet, f) for f in UNET_FILES]
        return tuple(files)


def parse_entry(path: Path) -> GeneratorEntry:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not valid TOML ({exc})") from None
    try:
        entry = GeneratorEntry(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"key {'.'.join(str(p) for p in e['loc']) or '(entry)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise RegistryError(f"{path}: {problems}") from None
    if entry.name != path.stem:
        raise RegistryError(f"{path}: name {entry.name!r} must equal the file name {path.stem!r}")
    return entry


@functools.lru_cache(maxsize=1)
def _entries() -> dict[str, GeneratorEntry]:
    return {
        entry.name: entry for entry in (parse_entry(p) for p in sorted(REGISTRY_DIR.glob("*.toml")))
    }


def list_generators() -> list[GeneratorEntry]:
    return list(_entries().values())


def get_generator(name: str) -> GeneratorEntry:
    entries = _entries()
    if name not in entries:
        import difflib

        close = difflib.get_close_matches(name, list(entries), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownGeneratorError(
            f"unknown generator {name!r}; {hint}valid generators: {', '.join(entries)}"
        )
    return entries[name]


def weight_files(name: str) -> tuple[WeightFile, ...]:
    return get_generator(name).weight_files()
