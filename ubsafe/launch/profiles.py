"""Cluster profiles (`hpc/<name>.toml`): partition, resources, setup lines and environment.

A profile sets defaults for every stage and may override them per stage (`[stage.reduce]`); command
line flags override both. Profiles are looked up as a path, then in `$UBSAFE_HPC_DIR`,
`~/.config/ubsafe/hpc/`, `./hpc/` and the project's own `hpc/` folder.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ubsafe.config import ConfigError

#: Stages that never need a GPU: they read cached arrays (the others run encoders or image models).
CPU_STAGES = frozenset({"fit", "compare", "reduce", "report"})


@dataclass(frozen=True)
class Resources:
    """What one array task of a stage asks Slurm for."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 4
    mem_gb: float = 16.0
    time_min: int = 120
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 256
    setup: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    additional: tuple[tuple[str, str], ...] = ()

    def updated(self, values: dict[str, Any]) -> Resources:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown profile setting(s) {unknown}; valid: {', '.join(sorted(known))}"
            )
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue
            if key in ("env", "additional") and isinstance(value, dict):
                value = tuple(sorted((str(k), str(v)) for k, v in value.items()))
            elif key == "setup":
                value = tuple(value)
            clean[key] = value
        return replace(self, **clean)


@dataclass(frozen=True)
class Profile:
    name: str
    defaults: Resources = field(default_factory=Resources)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_stage(self, stage: str, flags: dict[str, Any]) -> Resources:
        """The stage's resources: profile defaults < CPU-only stages < [stage.X] < flags."""
        resources = self.defaults
        if stage in CPU_STAGES:
            resources = resources.updated({"gpus_per_task": 0})
        resources = resources.updated(self.stages.get(stage, {}))
        flag_values = dict(flags)
        if stage in CPU_STAGES:
            flag_values.pop("gpus_per_task", None)
        return resources.updated(flag_values)


def search_path() -> list[Path]:
    paths = []
    if os.environ.get("UBSAFE_HPC_DIR"):
        paths.append(Path(os.environ["UBSAFE_HPC_DIR"]))
    paths += [
        Path.home() / ".config" / "ubsafe" / "hpc",
        Path.cwd() / "hpc",
        Path(__file__).resolve().parents[2] / "hpc",
    ]
    return paths


def find_profile(name: str) -> Path:
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    for folder in search_path():
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    available = sorted(
        {p.stem for folder in search_path() if folder.is_dir() for p in folder.glob("*.toml")}
    )
    raise ConfigError(
        f"profile {name!r} not found in {', '.join(str(p) for p in search_path())}; "
        f"available: {', '.join(available) or 'none'}"
    )


def load_profile(name: str | None) -> Profile:
    if name is None:
        return Profile("none")
    path = find_profile(name)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from None
    stages = data.pop("stage", {})
    data.pop("description", None)
    try:
        defaults = Resources().updated(data)
    except ConfigError as exc:
        raise ConfigError(f"profile {path}: {exc}") from None
    return Profile(path.stem, defaults, {str(k): dict(v) for k, v in stages.items()})
