"""Cluster profiles (`hpc/<name>.toml`): partition, resources, setup lines and environment.

A profile sets what every array task asks for, may override it per stage (`[stage.reduce]`), and
command-line flags override both. Profiles are found as a path, or by name in `$UBSAFE_HPC_DIR`,
`~/.config/ubsafe/hpc/`, `./hpc/` and the project's own `hpc/` folder, in that order.

    partition = "gpu"
    gpus_per_task = 1
    cpus_per_task = 8
    mem_gb = 32
    time_min = 240
    setup = ["module load cuda/12.1"]
    [env]
    HDF5_USE_FILE_LOCKING = "FALSE"
    [stage.reduce]
    partition = "cpu"
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ubsafe.config import ConfigError

#: Setting name → accepted TOML types (bool is excluded from the numbers on purpose).
_TYPES: dict[str, tuple[type, ...]] = {
    "partition": (str,),
    "gpus_per_task": (int,),
    "cpus_per_task": (int,),
    "mem_gb": (int, float),
    "time_min": (int,),
    "account": (str,),
    "qos": (str,),
    "constraint": (str,),
    "array_parallelism": (int,),
    "shards_per_task": (int,),
    "max_array_size": (int,),
    "signal_delay_s": (int,),
    "python": (str,),
    "setup": (list,),
    "env": (dict,),
    "additional": (dict,),
}
_MINIMUM: dict[str, float] = {
    "gpus_per_task": 0,
    "cpus_per_task": 1,
    "mem_gb": 0.001,
    "time_min": 1,
    "array_parallelism": 1,
    "shards_per_task": 1,
    "max_array_size": 1,
    "signal_delay_s": 0,
}


@dataclass(frozen=True)
class Resources:
    """What one array task of a stage asks Slurm for, and how it is started.

    `max_array_size` overrides what `scontrol show config` reports (a site limit below Slurm's);
    `shards_per_task` packs that many shards into each array task (default: automatic);
    `setup` lines run before the task (`module load ...`), `env` is exported (values may use
    `$VAR`), `additional` holds raw sbatch options: `mail-type = "FAIL"` becomes
    `#SBATCH --mail-type=FAIL`, `hold = true` becomes `#SBATCH --hold` (false leaves it out).
    """

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 4
    mem_gb: float = 16.0
    time_min: int = 120
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 256
    shards_per_task: int | None = None
    max_array_size: int | None = None
    signal_delay_s: int | None = None
    python: str | None = None
    setup: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    additional: tuple[tuple[str, str | bool], ...] = ()

    def updated(self, values: Mapping[str, Any], *, origin: str = "settings") -> Resources:
        """A copy with `values` applied (None leaves a setting as it is); checks names and types."""
        valid = {f.name for f in fields(self)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ConfigError(
                f"{origin}: unknown setting(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(valid))}"
            )
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue
            clean[key] = _checked(key, value, origin)
        return replace(self, **clean)


def _is_a(value: Any, kinds: tuple[type, ...]) -> bool:
    return not isinstance(value, bool) and isinstance(value, kinds)


def _checked(key: str, value: Any, origin: str) -> Any:
    """The setting's value in `Resources` form, after checking its type and range."""
    if not _is_a(value, _TYPES[key]):
        wanted = " or ".join(k.__name__ for k in _TYPES[key])
        raise ConfigError(
            f"{origin}: {key} = {value!r} is a {type(value).__name__}; it must be a {wanted}"
        )
    if key in _MINIMUM and value < _MINIMUM[key]:
        raise ConfigError(f"{origin}: {key} = {value!r} must be at least {_MINIMUM[key]}")
    if key == "setup":
        if not all(isinstance(line, str) for line in value):
            raise ConfigError(f"{origin}: setup must be a list of shell lines (strings)")
        return tuple(value)
    if key == "env":
        return tuple(sorted((str(k), _scalar(k, v, key, origin)) for k, v in value.items()))
    if key == "additional":
        # A bare sbatch flag (`--hold`) is `true`; `false` drops it.
        return tuple(
            sorted(
                (str(k), True if v is True else _scalar(k, v, key, origin))
                for k, v in value.items()
                if v is not False
            )
        )
    return float(value) if key == "mem_gb" else value


def _scalar(name: str, value: Any, table: str, origin: str) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str | int | float):
        return str(value)
    raise ConfigError(f"{origin}: [{table}] {name} = {value!r} must be a string or a number")


@dataclass(frozen=True)
class Profile:
    """Resources for every stage, with per-stage overrides."""

    name: str
    defaults: Resources = field(default_factory=Resources)
    #: per stage, the settings its `[stage.X]` table gives (already checked)
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""

    def for_stage(
        self, stage: str, flags: Mapping[str, Any], *, cpu_only: bool | None = None
    ) -> Resources:
        """The stage's resources: profile < no GPU for CPU-only stages < [stage.X] < flags.

        `--gpus-per-task` does not apply to CPU-only stages: by default those whose declaration
        (`NEEDS.gpu`) asks for none; the caller says when a stage is CPU-only for its run.
        """
        if cpu_only is None:
            from ubsafe.stages import STAGES

            cpu_only = not STAGES[stage].needs_gpu()
        resources = self.defaults
        if cpu_only:
            resources = replace(resources, gpus_per_task=0)
        if stage in self.stages:
            resources = resources.updated(self.stages[stage], origin=f"[stage.{stage}]")
        flag_values = {k: v for k, v in flags.items() if v is not None}
        if cpu_only:
            flag_values.pop("gpus_per_task", None)
        return resources.updated(flag_values, origin="command line")


def search_path() -> list[Path]:
    """Folders searched for `<name>.toml`, first match wins."""
    paths = []
    if os.environ.get("UBSAFE_HPC_DIR"):
        paths.append(Path(os.environ["UBSAFE_HPC_DIR"]))
    paths += [
        Path.home() / ".config" / "ubsafe" / "hpc",
        Path.cwd() / "hpc",
        Path(__file__).resolve().parents[2] / "hpc",  # a source checkout
        Path(sys.prefix) / "share" / "ubsafe" / "hpc",  # an installed wheel (setup.cfg data_files)
    ]
    return paths


def available_profiles() -> list[str]:
    return sorted(
        {p.stem for folder in search_path() if folder.is_dir() for p in folder.glob("*.toml")}
    )


def find_profile(name: str) -> Path:
    """The profile file for `name` (a path to a .toml file, or a name on the search path)."""
    candidate = Path(name).expanduser()
    if candidate.suffix == ".toml":
        if candidate.is_file():
            return candidate
        raise ConfigError(f"profile file {candidate} does not exist")
    for folder in search_path():
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    raise ConfigError(
        f"profile {name!r} not found in {', '.join(str(p) for p in search_path())}; "
        f"available: {', '.join(available_profiles()) or 'none'} "
        "(or pass a path to a .toml file)"
    )


def load_profile(name: str | None) -> Profile:
    """The named profile, or built-in defaults when `name` is None."""
    if name is None:
        return Profile("default")
    path = find_profile(name)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from None
    return parse_profile(data, path.stem, origin=f"profile {path}")


def parse_profile(data: Mapping[str, Any], name: str, *, origin: str) -> Profile:
    """Build a profile from its TOML table; errors name the file, the setting and the fix."""
    data = dict(data)
    stages = data.pop("stage", {})
    description = data.pop("description", "")
    if not isinstance(stages, dict) or not isinstance(description, str):
        raise ConfigError(f"{origin}: [stage.NAME] tables and a description string expected")
    defaults = Resources().updated(data, origin=origin)
    from ubsafe.stages import STAGES

    per_stage = {}
    for stage, values in stages.items():
        if stage not in STAGES:
            raise ConfigError(
                f"{origin}: [stage.{stage}] names no stage; stages: {', '.join(STAGES)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: stage.{stage} must be a table")
        Resources().updated(values, origin=f"{origin} [stage.{stage}]")  # check it now
        per_stage[str(stage)] = dict(values)
    return Profile(name, defaults, per_stage, description)
