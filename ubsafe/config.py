"""The run config: one validated, frozen object built from defaults, TOML files and flags.

Precedence, lowest first: built-in defaults < the dataset's own `ubsafe.toml` < `--config FILE` <
command-line flags. A dataset's `ubsafe.toml` is a downloaded file: it may set only what describes
the data and its default analysis (`DATASET_SETTINGS`); anything that reaches the network, spends
money or moves where files are read or written is refused from it.

The resolved config is written to `<run>/run.toml` at first launch; workers
reload it from there. Fields are split into those that change results (they make the config hash
and a relaunch that changes them is refused with a diff) and execution-only ones (where and how fast
the work runs), which a relaunch may change.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ubsafe.targets import TARGET_NAMES, runs_stage
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

#: What a dataset's own ubsafe.toml may set: the data's description and its default analysis
#: (tables written flat: `attack_eps` for attack.eps). Everything else (endpoints, gpt4v.mode,
#: weights_dir, cache_dir, out, image_roots, ...) stays with the user; classifiers whose registry
#: entry says `network = true` are refused too.
DATASET_SETTINGS: frozenset[str] = frozenset(
    {
        "dataset_format",
        "source_map",
        "encoder",
        "classifiers",
        "coverage",
        "classifier_options",
        "mitigation_baseline",
        "nudity_classes",
        "nudity_threshold",
        "perturbations",
        "severities",
        "attacks",
        "attack_mode",
        "attack_eps",
        "attack_steps",
        "attack_max_per_source",
        "attack_seeds",
        "attack_sources",
        "seed",
        "bootstrap",
        "ci_level",
        "shard_size",
        "embedding_dtype",
        "precision",
        "vlm_converter",
        "vlm_decoding",
        "vlm_max_new_tokens",
        "batch_size",
        "micro_batch",
    }
)

#: The model whose answers UnsafeBench published (and that cannot be queried any more).
REPLAYED_GPT4V_MODEL = "gpt-4-vision-preview"


def default_weights_dir() -> str:
    return os.environ.get("UBSAFE_WEIGHTS", str(Path.home() / ".cache" / "ubsafe" / "weights"))


def _execution(**kwargs: Any) -> Any:
    """A field that does not change results: left out of the hash, free to change on relaunch."""
    return Field(json_schema_extra={"execution": True}, **kwargs)


class _Section(BaseModel):
    """A `[table]` of the run config: a family of settings under one name."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AttackSettings(_Section):
    """`[attack]`: the adversarial attacks of robustness runs (`attacks` names which)."""

    #: `ubsafe`: budgets in /255 of pixel space; `paper`: UnsafeBench's attacks as published
    mode: Literal["ubsafe", "paper"] = "ubsafe"
    eps: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    steps: int = Field(default=10, ge=1)
    #: correctly classified images attacked per source (and seed)
    max_per_source: int | None = Field(default=500, ge=1)
    seeds: tuple[int, ...] = (2023,)
    #: paper mode only: the dataset sources drawn from, one draw of `max_per_source` each
    #: (UnsafeBench's `--source`, Laion5B by default); `Laion5B+Lexica` pools both into one draw,
    #: as its `both`
    sources: tuple[str, ...] = ("Laion5B",)

    @field_validator("sources", mode="before")
    @classmethod
    def _split_sources(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("sources")
    @classmethod
    def _check_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = [name.strip() for entry in value for name in entry.split("+")]
        if not value or any(not name for name in names):
            raise ValueError(
                f"attack.sources {list(value)!r} must name at least one source, e.g. ['Laion5B'] "
                "or ['Laion5B', 'Lexica'] (join names with '+' to pool them into one draw)"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"attack.sources {list(value)!r} names {repeated} more than once; each source "
                "may be drawn from once"
            )
        return tuple("+".join(n.strip() for n in entry.split("+")) for entry in value)

    @model_validator(mode="after")
    def _paper_seeds(self) -> AttackSettings:
        # the paper's mode draws its 500 images per source with each of its three seeds
        if self.mode == "paper" and "seeds" not in self.model_fields_set:
            object.__setattr__(self, "seeds", (2023, 2024, 2025))
        return self


class VlmSettings(_Section):
    """`[vlm]`: how vision-language judges answer, and how fast they are asked."""

    #: response → safe/unsafe/unsure: the authors' RoBERTa converter, the documented rules, or
    #: `auto` (RoBERTa when its files are present, else the rules; the choice is recorded per row)
    converter: Literal["roberta", "rules", "auto"] = "roberta"
    #: `greedy` for every judge, or `paper`: as the paper decoded each (InstructBLIP through
    #: LAVIS: 5 beams, repetition penalty 1.5; LLaVA greedy)
    decoding: Literal["greedy", "paper"] = "greedy"
    max_new_tokens: int = Field(default=512, ge=1)
    #: images (or prompts) per generation batch of a VLM judge
    batch_size: int = _execution(default=8, ge=1)
    #: request rate towards an OpenAI-compatible endpoint, per task
    requests_per_minute: float = _execution(default=60.0, gt=0)
    #: answers of queried endpoints, one file per question (default <run>/vlm-cache)
    response_cache: str = _execution(default="")
    #: local copy of yiting/unsafebench_vlm_responses (`ubsafe data fetch vlm-responses --to DIR`;
    #: default <weights_dir>/hf/yiting/unsafebench_vlm_responses, where `ubsafe weights fetch`
    #: puts it)
    responses_dir: str = _execution(default="")


class Gpt4vSettings(_Section):
    """`[gpt4v]`: where the gpt4v judge's answers come from."""

    #: `replay` the published answers of gpt-4-vision-preview (joined by sample id), or `query`
    #: an OpenAI-compatible endpoint (OPENAI_BASE_URL, OPENAI_API_KEY) with `model`
    mode: Literal["replay", "query"] = "replay"
    model: str = REPLAYED_GPT4V_MODEL


class PerspectiveSettings(_Section):
    """`[perspective]`: PerspectiveVision's LoRA adapter."""

    #: an adapter made elsewhere (another run's fitted/perspective-llava, or a converted
    #: yiting/PerspectiveVision-LLaVA-LoRA); empty: the finetune stage trains one on this run's
    #: train split
    adapter: str = ""
    #: overrides of the LoRA recipe (ubsafe.perspective.lora.LoraSettings), e.g. max_steps
    lora: dict[str, Any] = Field(default_factory=dict)

    @field_validator("lora")
    @classmethod
    def _check_lora(cls, value: dict[str, Any]) -> dict[str, Any]:
        import dataclasses

        from ubsafe.perspective.lora import LoraSettings

        valid = [f.name for f in dataclasses.fields(LoraSettings)]
        unknown = sorted(set(value) - set(valid))
        if unknown:
            raise ValueError(
                f"perspective.lora has unknown key(s) {unknown}; valid keys: {', '.join(valid)}"
            )
        return value


#: The run config's `[tables]`. A setting `x` of table `t` is also accepted flat as `t_x` (the
#: form of run.toml files written before the tables, and of keyword arguments), and is `t_x` in
#: the config hash, so runs made before the tables keep theirs.
SECTIONS: dict[str, type[_Section]] = {
    "attack": AttackSettings,
    "vlm": VlmSettings,
    "gpt4v": Gpt4vSettings,
    "perspective": PerspectiveSettings,
}


def _section_of(key: str) -> tuple[str, str] | None:
    """`("attack", "eps")` for the flat key `attack_eps`; None for a top-level setting."""
    section, _, name = key.partition("_")
    model = SECTIONS.get(section)
    if model is not None and name in model.model_fields:
        return section, name
    return None


def dotted(key: str) -> str:
    """How a setting is written for people: `attack.eps` for the flat key `attack_eps`."""
    parts = _section_of(key)
    return f"{parts[0]}.{parts[1]}" if parts else key


def flatten_sections(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A TOML layer with its `[tables]` written flat (`[attack] eps` → `attack_eps`), so layers
    merge setting by setting; a table's unknown key is refused here, with the valid ones."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        model = SECTIONS.get(key)
        if model is None:
            flat[key] = value
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: {key} is a table of settings ({', '.join(model.model_fields)}); "
                f"write it as [{key}] with one setting per line, or as {key}.<setting> = ..."
            )
        for name, item in value.items():
            if name not in model.model_fields:
                raise ConfigError(
                    f"{where}: [{key}] has no setting {name!r}; its settings are: "
                    f"{', '.join(model.model_fields)}"
                )
            flat[f"{key}_{name}"] = item
    return flat


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
    #: [attack]: attack.mode, attack.eps, attack.steps, ... (`AttackSettings`)
    attack: AttackSettings = Field(default_factory=AttackSettings)
    seed: int = 0
    bootstrap: int = Field(default=10_000, ge=100)
    ci_level: float = Field(default=0.95, gt=0.5, lt=1.0)
    shard_size: int = Field(default=256, ge=1)
    embedding_dtype: Literal["float16", "float32"] = "float32"
    #: encoder compute precision: auto = bfloat16 autocast on GPU, float32 on CPU
    precision: Literal["auto", "float32", "bfloat16"] = "auto"

    # --- text-to-image mitigation metrics (result-affecting) ---
    #: the generator every mitigation is compared with (nudity removal, fidelity)
    mitigation_baseline: str = "sd-1.4"
    #: NudeNet classes counted as exposed nudity, and the minimum detection score
    nudity_classes: tuple[str, ...] = (
        "ANUS_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
    )
    nudity_threshold: float = Field(default=0.6, ge=0.0, le=1.0)

    # --- vision-language judges and PerspectiveVision (result-affecting, but for the
    # execution-only fields of [vlm]) ---
    vlm: VlmSettings = Field(default_factory=VlmSettings)
    gpt4v: Gpt4vSettings = Field(default_factory=Gpt4vSettings)
    perspective: PerspectiveSettings = Field(default_factory=PerspectiveSettings)

    # --- text-to-image generation (`mitigation` target; result-affecting) ---
    #: generator registry names (`ubsafe generators`)
    generators: tuple[str, ...] = ("sd-1.4",)
    images_per_prompt: int = Field(default=10, ge=1)
    #: `image`: each image's starting latent seeded by (prompt seed, image index); `i2p`: the I2P
    #: runner's stream (one generator per prompt on the device, 5 images per call)
    seeding: Literal["image", "i2p"] = "image"
    #: denoising steps (default: each generator's own, 50 for Stable Diffusion)
    steps: int | None = Field(default=None, ge=1)
    #: images per pipeline call on a GPU (the CPU makes one image per call: its arithmetic depends
    #: on the batch shape); part of the hash because GPU results change with it
    generation_batch: int = Field(default=8, ge=1)
    #: the generators' precision: auto = float16 on a GPU, float32 on the CPU
    generation_precision: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    #: composite judges of generated images (`i2p`); unset: every one whose parts the run has
    judges: tuple[str, ...] | None = None

    # --- where and how fast (execution-only) ---
    #: a name in `ubsafe.targets.TARGETS`
    target: str = _execution(default="effectiveness")
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
    #: how CPU decoding runs in parallel: `threads` (PIL releases the GIL while it decodes), or
    #: `processes` (one torch thread each) where the GIL is the limit: many workers, small
    #: images; the same pixels either way
    decode_pool: Literal["threads", "processes"] = _execution(default="threads")
    device: str = _execution(default="auto")
    #: folders outside the dataset's own from which a manifest may name image files (absolute
    #: paths, `../`, symlinks); nothing else outside the dataset folder is read
    image_roots: tuple[str, ...] = _execution(default=())
    #: image files (and images inside Parquet files) larger than this are skipped unread
    max_image_mb: float = _execution(default=64.0, gt=0)
    #: check weight files against their pinned sha256 when they are loaded
    verify_weights: bool = _execution(default=True)

    @model_validator(mode="before")
    @classmethod
    def _fold_sections(cls, data: Any) -> Any:
        """Flat `attack_eps` (old run.toml files, keyword arguments) into `attack = {eps = ...}`."""
        if not isinstance(data, Mapping):
            return data
        folded: dict[str, Any] = {}
        tables: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            parts = _section_of(key)
            if parts is None:
                folded[key] = value
            else:
                tables.setdefault(parts[0], {})[parts[1]] = value
        for section, values in tables.items():
            given = folded.get(section, {})
            if isinstance(given, BaseModel):
                given = given.model_dump(exclude_unset=True)
            if not isinstance(given, Mapping):
                return data  # let the field's own validation say what is wrong
            twice = sorted(set(given) & set(values))
            if twice:
                raise ValueError(
                    f"{', '.join(f'{section}.{k}' for k in twice)} set twice, as "
                    f"[{section}] {twice[0]} and as {section}_{twice[0]}; keep one"
                )
            folded[section] = {**given, **values}
        return folded

    @field_validator(
        "classifiers",
        "perturbations",
        "attacks",
        "generators",
        "judges",
        "image_roots",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("image_roots")
    @classmethod
    def _absolute_roots(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # workers reload the config elsewhere: keep what this launch meant
        return tuple(str(Path(p).expanduser().resolve()) for p in value)

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: str) -> str:
        if value not in TARGET_NAMES:
            raise ValueError(f"unknown target {value!r}; choose one of {', '.join(TARGET_NAMES)}")
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

    @model_validator(mode="after")
    def _check_gpt4v(self) -> RunConfig:
        if self.gpt4v.mode == "replay" and self.gpt4v.model != REPLAYED_GPT4V_MODEL:
            raise ValueError(
                f"gpt4v.model = {self.gpt4v.model!r} with gpt4v.mode = 'replay': the published "
                f"answers are {REPLAYED_GPT4V_MODEL}'s. fix: gpt4v.mode = 'query' to ask "
                f"{self.gpt4v.model!r}, or leave gpt4v.model at its default"
            )
        if runs_stage(self.target, "compare"):
            from ubsafe.classifiers.registry import replaying_judges

            for name, setting in replaying_judges(self):
                raise ValueError(
                    f"{name} replays published answers about the original images, so it cannot "
                    f"judge perturbed ones (robustness/all). fix: run {name} in an effectiveness "
                    f"run, or set {setting} = 'query' to ask an endpoint about every perturbed "
                    "image"
                )
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

    def flat_fields(self) -> dict[str, Any]:
        """Every setting as a plain JSON-able value, tables written flat (`attack_eps`)."""
        data = self.model_dump(mode="json")
        for section in SECTIONS:
            for name, value in data.pop(section).items():
                data[f"{section}_{name}"] = value
        return data

    def result_fields(self) -> dict[str, Any]:
        """The settings that change results, tables written flat (`attack_eps`: the hashes of
        runs made before the tables stay as they were)."""
        data = self.flat_fields()
        if self.attack.mode != "paper":
            del data["attack_sources"]  # only the paper's draw reads it
        # generation settings matter only to runs that generate images (others keep their hashes)
        dropped = execution_fields() | (
            frozenset() if runs_stage(self.target, "generate") else GENERATION_FIELDS
        )
        return {k: v for k, v in data.items() if k not in dropped}

    def config_hash(self) -> str:
        """`v<version>-<12 hex>`: SHA-256 of the canonical JSON of the result-affecting fields."""
        canonical = json.dumps(self.result_fields(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
        return f"v{self.version}-{digest}"

    def setting(self, name: str) -> Any:
        """One setting by the name a person writes (`gpt4v.mode`, `seed`) or flat (`gpt4v_mode`)."""
        section, _, key = name.partition(".")
        parts = (section, key) if key else _section_of(name)
        if parts is None:
            return getattr(self, name)
        return getattr(getattr(self, parts[0]), parts[1])

    # --- derived paths ---

    @property
    def cache_root(self) -> Path:
        """Where embeddings live: the shared cache dir if set, else `<run>/embeddings`."""
        return Path(self.cache_dir) if self.cache_dir else Path(self.out) / "embeddings"

    def to_toml(self) -> str:
        """The config as TOML for run.toml (secrets redacted, should one have slipped in)."""
        import tomli_w

        from ubsafe.redact import redact

        data = _drop_none(self.model_dump(mode="json"))
        header = (
            f"# ubsafe run config, hash {self.config_hash()}\n"
            "# Result-affecting fields may not change on relaunch; start a new run instead.\n"
        )
        return redact(header + tomli_w.dumps(data))


#: Settings of the generate stage and the mitigation metrics (result fields of mitigation runs
#: only).
GENERATION_FIELDS = frozenset(
    {
        "generators",
        "images_per_prompt",
        "seeding",
        "steps",
        "generation_batch",
        "generation_precision",
        "judges",
        "mitigation_baseline",
        "nudity_classes",
        "nudity_threshold",
    }
)


def execution_fields() -> frozenset[str]:
    """The execution-only settings, tables written flat (`vlm_batch_size`)."""

    def marked(field: Any) -> bool:
        extra = field.json_schema_extra
        return isinstance(extra, dict) and bool(extra.get("execution"))

    top = {name for name, field in RunConfig.model_fields.items() if marked(field)}
    tabled = {
        f"{section}_{name}"
        for section, model in SECTIONS.items()
        for name, field in model.model_fields.items()
        if marked(field)
    }
    return frozenset(top | tabled)


def setting_names() -> list[str]:
    """Every setting as a person writes it (`seed`, `attack.eps`), sorted."""
    top = [name for name in RunConfig.model_fields if name not in SECTIONS]
    tabled = [f"{s}.{name}" for s, model in SECTIONS.items() for name in model.model_fields]
    return sorted(top + tabled)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _drop_none(v) if isinstance(v, dict) and k in SECTIONS else v
        for k, v in data.items()
        if v is not None
    }


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
    announce: Callable[[str], None] | None = None,
) -> RunConfig:
    """Merge defaults < dataset's ubsafe.toml < config file < flags (None flags are unset).

    `announce` receives one line per setting taken from the dataset's ubsafe.toml (those not
    overridden), so a launch says what the downloaded dataset chose.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if base:
        layers.append(("defaults", base))
    if dataset is not None:
        dataset_toml = Path(dataset) / DATASET_CONFIG_NAME
        if Path(dataset).is_dir() and dataset_toml.is_file():
            layers.append((str(dataset_toml), dataset_defaults(dataset_toml)))
    if config_file is not None:
        layers.append(
            (str(config_file), flatten_sections(read_toml(config_file), str(config_file)))
        )
    if flags:
        layers.append(("command-line flags", {k: v for k, v in flags.items() if v is not None}))
    if dataset is not None:
        # built-in prompt sets (builtin:demo) are names, not paths
        named = str(dataset).startswith("builtin:")
        value = str(dataset) if named else str(Path(dataset).resolve())
        layers.append(("DATASET argument", {"dataset": value}))

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, layer in layers:
        for key, value in layer.items():
            merged[key] = value
            origin[key] = name
    try:
        config = RunConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origin)) from None
    if announce is not None:
        taken = [k for k in sorted(origin) if origin[k] == str(dataset_toml_of(dataset))]
        if taken:
            announce(f"settings from {dataset_toml_of(dataset)}:")
            for key in taken:
                announce(f"  {dotted(key)} = {json.dumps(merged[key], ensure_ascii=True)}")
    return config


def dataset_toml_of(dataset: str | os.PathLike[str] | None) -> Path | None:
    return None if dataset is None else Path(dataset) / DATASET_CONFIG_NAME


def dataset_defaults(path: Path) -> dict[str, Any]:
    """A dataset's ubsafe.toml, refused whole when it sets what a dataset may not."""
    data = flatten_sections(read_toml(path), str(path))
    refused = sorted(set(data) - DATASET_SETTINGS)
    problems = [f"  {dotted(key)}: a dataset's own config may not set it" for key in refused]
    named = data.get("classifiers", ())
    if isinstance(named, str):
        named = [part.strip() for part in named.split(",")]
    problems += [
        f"  classifiers: {name!r} sends images to a remote API; a dataset may not select it"
        for name in named
        if isinstance(name, str) and _is_network_classifier(name)
    ]
    options = data.get("classifier_options", {})
    problems += [
        f"  classifier_options.{name}.{key}: names a file to read; a dataset may not set it"
        for name, chosen in (options.items() if isinstance(options, dict) else ())
        if isinstance(chosen, dict)
        for key in sorted(chosen)
        if key in _file_options(name)
    ]
    if problems:
        allowed = ", ".join(sorted(dotted(key) for key in DATASET_SETTINGS))
        raise ConfigError(
            f"{path} sets what only you may set (what is reached over the network, what is "
            "paid for, where files are read or written):\n"
            + "\n".join(problems)
            + f"\nfix: delete those lines from {path} and put what you want in your own --config "
            f"file or flags. A dataset's ubsafe.toml may set: {allowed}"
        )
    return data


def _file_options(name: str) -> tuple[str, ...]:
    from ubsafe.classifiers.registry import UnknownClassifierError, get_entry

    try:
        return get_entry(name).file_options
    except UnknownClassifierError:
        return ()  # unknown names are reported when the config is checked


def _is_network_classifier(name: str) -> bool:
    from ubsafe.classifiers.registry import UnknownClassifierError, get_entry

    try:
        return bool(get_entry(name).network)
    except UnknownClassifierError:
        return False  # unknown names are reported when the config is checked


def _explain(exc: ValidationError, origin: Mapping[str, str]) -> str:
    lines = ["invalid run config:"]
    valid = ", ".join(setting_names())
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        loc = [str(p) for p in err["loc"]]
        # where the setting came from: layers are merged flat (`attack_eps` for attack.eps)
        top = f"{loc[0]}_{loc[1]}" if len(loc) > 1 and loc[0] in SECTIONS else (loc or [""])[0]
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
            stored, now = json.dumps(a.get(key)), json.dumps(b.get(key))
            lines.append(f"  {dotted(key)}: stored {stored}, this launch {now}")
    return "\n".join(lines)
