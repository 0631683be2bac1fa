"""The run config: one validated, frozen object built from defaults, TOML files and flags.

Precedence, lowest first: built-in defaults < the dataset's own `ubsafe.toml` < `--config FILE` <
command-line flags. The resolved config is written to `<run>/run.toml` at first launch; workers
reload it from there. Fields are split into those that change results (they make the config hash
and a relaunch that changes them is refused with a diff) and execution-only ones (where and how fast
the work runs), which a relaunch may change.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ubsafe.taxonomy import DEFAULT_SOURCE_MAP, SOURCE_KINDS

#: Bump when the meaning of a result-affecting field changes; it is part of the config hash.
CONFIG_VERSION = 1

#: The paper's classifiers that have published weights (VLM judges are opt-in: they need GPUs).
PAPER_CLASSIFIERS: tuple[str, ...] = ("q16", "multiheaded", "sd_filter", "nsfw_detector", "nudenet")

#: The 15 ImageNet-C corruptions (the 4 held-out ones are opt-in).
DEFAULT_PERTURBATIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)

DATASET_CONFIG_NAME = "ubsafe.toml"

#: The model whose answers UnsafeBench published (and that cannot be queried any more).
REPLAYED_GPT4V_MODEL = "gpt-4-vision-preview"


def default_weights_dir() -> str:
    return os.environ.get("UBSAFE_WEIGHTS", str(Path.home() / ".cache" / "ubsafe" / "weights"))


def _execution(**kwargs: Any) -> Any:
    """A field that does not change results: left out of the hash, free to change on relaunch."""
    return Field(json_schema_extra={"execution": True}, **kwargs)


class RunConfig(BaseModel):
    """Everything a run needs, validated and frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = CONFIG_VERSION

    # --- what is measured (result-affecting) ---
    dataset_format: Literal["auto", "unsafebench", "external", "manifest"] = "auto"
    source_map: dict[str, Literal["real", "ai"]] = Field(
        default_factory=lambda: dict(DEFAULT_SOURCE_MAP)  # type: ignore[arg-type]
    )
    encoder: str = "vit-l-14-openai"
    classifiers: tuple[str, ...] = PAPER_CLASSIFIERS
    #: per classifier, the categories it is scored on (default: its registry entry's coverage)
    coverage: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    #: per classifier, overrides of its registry entry's [options] (e.g. nudenet's threshold)
    classifier_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    perturbations: tuple[str, ...] = DEFAULT_PERTURBATIONS
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    attacks: tuple[str, ...] = ("fgsm", "pgd", "deepfool")
    attack_mode: Literal["ubsafe", "paper"] = "ubsafe"
    attack_eps: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    attack_steps: int = Field(default=10, ge=1)
    attack_max_per_source: int | None = Field(default=500, ge=1)
    attack_seeds: tuple[int, ...] = (2023,)
    seed: int = 0
    bootstrap: int = Field(default=10_000, ge=100)
    ci_level: float = Field(default=0.95, gt=0.5, lt=1.0)
    shard_size: int = Field(default=256, ge=1)
    embedding_dtype: Literal["float16", "float32"] = "float32"
    #: encoder compute precision: auto = bfloat16 autocast on GPU, float32 on CPU
    precision: Literal["auto", "float32", "bfloat16"] = "auto"

    # --- vision-language judges and PerspectiveVision (result-affecting) ---
    #: response → safe/unsafe/unsure: the authors' RoBERTa converter, the documented rules, or
    #: `auto` (RoBERTa when its files are present, else the rules; the choice is recorded per row)
    vlm_converter: Literal["roberta", "rules", "auto"] = "roberta"
    #: `greedy` for every judge, or `paper`: as the paper decoded each (InstructBLIP through
    #: LAVIS: 5 beams, repetition penalty 1.5; LLaVA greedy)
    vlm_decoding: Literal["greedy", "paper"] = "greedy"
    vlm_max_new_tokens: int = Field(default=512, ge=1)
    #: gpt4v: `replay` the published answers of gpt-4-vision-preview (joined by sample id), or
    #: `query` an OpenAI-compatible endpoint (OPENAI_BASE_URL, OPENAI_API_KEY) with `gpt4v_model`
    gpt4v_mode: Literal["replay", "query"] = "replay"
    gpt4v_model: str = REPLAYED_GPT4V_MODEL
    #: perspective-llava's LoRA adapter made elsewhere (another run's fitted/perspective-llava, or
    #: a converted yiting/PerspectiveVision-LLaVA-LoRA); empty: the finetune stage trains one on
    #: this run's train split
    perspective_adapter: str = ""
    #: overrides of the LoRA recipe (ubsafe.vlm.perspective.lora.LoraSettings), e.g. max_steps
    perspective_lora: dict[str, Any] = Field(default_factory=dict)

    # --- where and how fast (execution-only) ---
    target: Literal["embed", "effectiveness", "robustness", "all"] = _execution(
        default="effectiveness"
    )
    dataset: str = _execution(default="")
    out: str = _execution(default="")
    cache_dir: str = _execution(default="")
    weights_dir: str = _execution(default_factory=default_weights_dir)
    batch_size: int = _execution(default=32, ge=1)
    #: samples per encoder pass (default: batch_size on GPU, 1 on CPU); kept only if a load-time
    #: check shows a sample's embedding does not depend on its position in the pass
    micro_batch: int | None = _execution(default=None, ge=1)
    workers: int = _execution(default=1, ge=1)
    decode_workers: int = _execution(default=2, ge=0)
    device: str = _execution(default="auto")
    #: images (or prompts) per generation batch of a VLM judge
    vlm_batch_size: int = _execution(default=8, ge=1)
    #: request rate towards an OpenAI-compatible endpoint, per task
    vlm_requests_per_minute: float = _execution(default=60.0, gt=0)
    #: answers of queried endpoints, one file per question (default <run>/vlm-cache)
    vlm_response_cache: str = _execution(default="")
    #: local copy of yiting/unsafebench_vlm_responses (`ubsafe data fetch vlm-responses --to DIR`;
    #: default <weights_dir>/hf/yiting/unsafebench_vlm_responses, where `ubsafe weights fetch`
    #: puts it)
    vlm_responses_dir: str = _execution(default="")

    @field_validator("classifiers", "perturbations", "attacks", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("severities")
    @classmethod
    def _check_severities(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [s for s in value if not 1 <= s <= 5]
        if bad:
            raise ValueError(f"severities must lie in 1..5, got {bad}")
        return tuple(sorted(set(value)))

    @field_validator("source_map")
    @classmethod
    def _check_source_map(cls, value: dict[str, str]) -> dict[str, str]:
        for name, kind in value.items():
            if kind not in SOURCE_KINDS:
                raise ValueError(f"source_map[{name!r}] = {kind!r}: must be 'real' or 'ai'")
        return value

    @field_validator("perspective_lora")
    @classmethod
    def _check_lora(cls, value: dict[str, Any]) -> dict[str, Any]:
        import dataclasses

        from ubsafe.vlm.perspective.lora import LoraSettings

        valid = [f.name for f in dataclasses.fields(LoraSettings)]
        unknown = sorted(set(value) - set(valid))
        if unknown:
            raise ValueError(
                f"perspective_lora has unknown key(s) {unknown}; valid keys: {', '.join(valid)}"
            )
        return value

    @model_validator(mode="after")
    def _check_gpt4v(self) -> RunConfig:
        if self.gpt4v_mode == "replay" and self.gpt4v_model != REPLAYED_GPT4V_MODEL:
            raise ValueError(
                f"gpt4v_model = {self.gpt4v_model!r} with gpt4v_mode = 'replay': the published "
                f"answers are {REPLAYED_GPT4V_MODEL}'s. fix: gpt4v_mode = 'query' to ask "
                f"{self.gpt4v_model!r}, or leave gpt4v_model at its default"
            )
        if (
            "gpt4v" in self.classifiers
            and self.gpt4v_mode == "replay"
            and self.target in ("robustness", "all")
        ):
            raise ValueError(
                "gpt4v replays published answers about the original images, so it cannot judge "
                "perturbed ones (robustness/all). fix: run gpt4v in an effectiveness run, or set "
                "gpt4v_mode = 'query' to ask an endpoint about every perturbed image"
            )
        return self

    @model_validator(mode="after")
    def _paper_attack_seeds(self) -> RunConfig:
        # the paper's mode draws its 500 images per source with each of its three seeds
        if self.attack_mode == "paper" and "attack_seeds" not in self.model_fields_set:
            object.__setattr__(self, "attack_seeds", (2023, 2024, 2025))
        return self

    @model_validator(mode="after")
    def _check_version(self) -> RunConfig:
        if self.version != CONFIG_VERSION:
            raise ValueError(
                f"config version {self.version} is not this ubsafe's version {CONFIG_VERSION}; "
                "start a new run directory"
            )
        return self

    # --- identity ---

    def result_fields(self) -> dict[str, Any]:
        """The fields that change results, as plain JSON-able values."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if k not in execution_fields()}

    def config_hash(self) -> str:
        """`v<version>-<12 hex>`: SHA-256 of the canonical JSON of the result-affecting fields."""
        canonical = json.dumps(self.result_fields(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
        return f"v{self.version}-{digest}"

    # --- derived paths ---

    @property
    def cache_root(self) -> Path:
        """Where embeddings live: the shared cache dir if set, else `<run>/embeddings`."""
        return Path(self.cache_dir) if self.cache_dir else Path(self.out) / "embeddings"

    def to_toml(self) -> str:
        import tomli_w

        data = _drop_none(self.model_dump(mode="json"))
        header = (
            f"# ubsafe run config, hash {self.config_hash()}\n"
            "# Result-affecting fields may not change on relaunch; start a new run instead.\n"
        )
        return header + tomli_w.dumps(data)


def execution_fields() -> frozenset[str]:
    return frozenset(
        name
        for name, field in RunConfig.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("execution")
    )


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


class ConfigError(Exception):
    """A config that cannot be used; the message says what, where and how to fix it."""


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def build_config(
    *,
    dataset: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Merge defaults < dataset's ubsafe.toml < config file < flags (None flags are unset)."""
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if base:
        layers.append(("defaults", base))
    if dataset is not None:
        dataset_toml = Path(dataset) / DATASET_CONFIG_NAME
        if Path(dataset).is_dir() and dataset_toml.is_file():
            layers.append((str(dataset_toml), read_toml(dataset_toml)))
    if config_file is not None:
        layers.append((str(config_file), read_toml(config_file)))
    if flags:
        layers.append(("command-line flags", {k: v for k, v in flags.items() if v is not None}))
    if dataset is not None:
        layers.append(("DATASET argument", {"dataset": str(Path(dataset).resolve())}))

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, layer in layers:
        for key, value in layer.items():
            merged[key] = value
            origin[key] = name
    try:
        return RunConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origin)) from None


def _explain(exc: ValidationError, origin: Mapping[str, str]) -> str:
    lines = ["invalid run config:"]
    valid = ", ".join(sorted(RunConfig.model_fields))
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        top = str(err["loc"][0]) if err["loc"] else ""
        where = f" (from {origin[top]})" if top in origin else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}{where}: unknown setting; valid settings are: {valid}")
        else:
            lines.append(f"  {key}{where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Load a `run.toml` written by `RunConfig.to_toml`."""
    try:
        return RunConfig(**read_toml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + _explain(exc, {})) from None


def diff_configs(old: RunConfig, new: RunConfig) -> str:
    """The result-affecting fields that differ, one per line ('' when they agree)."""
    a, b = old.result_fields(), new.result_fields()
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            lines.append(
                f"  {key}: stored {json.dumps(a.get(key))}, this launch {json.dumps(b.get(key))}"
            )
    return "\n".join(lines)


_TARGET_RANK = {"embed": 0, "effectiveness": 1, "robustness": 2, "all": 2}


def widen_target(stored: str, new: str) -> str:
    """A relaunch for another target keeps what the run has: robustness implies effectiveness."""
    return stored if _TARGET_RANK[stored] > _TARGET_RANK[new] else new
