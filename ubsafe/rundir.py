"""The run directory contract: every path a stage, a test or a user reads or writes.

<run>/run.toml                      resolved config (guarded: see `open_run`)
<run>/plan.parquet                  sample_id, shard, category, source, label, split, ...
<run>/embeddings/<key>/<variant>/shard-00000.h5   (or under the shared cache dir)
<run>/shards/<stage>/shard-00000.<ext>
<run>/fitted/<classifier>.safetensors
<run>/logs/<stage>/shard-00000.log  and  shard-00000.error.json
<run>/results/...                   predictions.parquet, effectiveness.csv, ...
<run>/report/...
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ubsafe import atomic
from ubsafe.config import ConfigError, RunConfig, diff_configs, load_run_config
from ubsafe.targets import runs_stage, widen_target

if TYPE_CHECKING:
    import pandas as pd

RUN_TOML = "run.toml"
PLAN_FILE = "plan.parquet"


def shard_name(shard: int, ext: str) -> str:
    return f"shard-{shard:05d}.{ext}"


class Run:
    """A run directory and its frozen config; cheap to build in any process from the path alone."""

    def __init__(self, root: str | os.PathLike[str], config: RunConfig):
        self.root = Path(root)
        self.config = config

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Run:
        """Open an existing run (what workers do): the config comes from `<root>/run.toml`."""
        root = Path(root)
        path = root / RUN_TOML
        if not path.is_file():
            raise ConfigError(
                f"{root} is not a ubsafe run directory (no {RUN_TOML}); "
                "start one with `ubsafe plan` or `ubsafe run`"
            )
        return cls(root, load_run_config(path))

    # --- paths ---

    @property
    def run_toml(self) -> Path:
        return self.root / RUN_TOML

    @property
    def plan_path(self) -> Path:
        return self.root / PLAN_FILE

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def fitted_dir(self) -> Path:
        return self.root / "fitted"

    def shard_path(self, stage: str, shard: int, ext: str) -> Path:
        return self.root / "shards" / stage / shard_name(shard, ext)

    def log_path(self, stage: str, shard: int) -> Path:
        return self.root / "logs" / stage / shard_name(shard, "log")

    def error_path(self, stage: str, shard: int) -> Path:
        return self.root / "logs" / stage / shard_name(shard, "error.json")

    # --- plan ---

    @cached_property
    def plan(self) -> pd.DataFrame:
        import pandas as pd

        if not self.plan_path.is_file():
            raise ConfigError(f"{self.plan_path} is missing; run `ubsafe plan` first")
        return pd.read_parquet(self.plan_path)

    @cached_property
    def n_shards(self) -> int:
        import pyarrow.parquet as pq

        meta = pq.read_schema(self.plan_path).metadata or {}
        return int(meta[b"ubsafe.n_shards"])

    @cached_property
    def dataset_fingerprint(self) -> str:
        import pyarrow.parquet as pq

        meta = pq.read_schema(self.plan_path).metadata or {}
        return meta[b"ubsafe.fingerprint"].decode()

    @cached_property
    def images_in_run(self) -> bool:
        """Whether the plan's image locations are inside the run (generated images)."""
        import pyarrow.parquet as pq

        meta = pq.read_schema(self.plan_path).metadata or {}
        return meta.get(b"ubsafe.images") == b"run"

    @cached_property
    def shard_sizes(self) -> dict[int, int]:
        """Planned rows per shard (counted once; completeness checks ask for every shard)."""
        shards, counts = np.unique(self.plan["shard"].to_numpy(), return_counts=True)
        return {int(k): int(v) for k, v in zip(shards, counts, strict=True)}

    def shard_plan(self, shard: int) -> pd.DataFrame:
        plan = self.plan
        return plan[plan["shard"] == shard].reset_index(drop=True)


def open_run(root: str | os.PathLike[str], config: RunConfig) -> Run:
    """Create the run directory, or reopen it with a config that must agree on every result field.

    First launch writes `run.toml`. A relaunch whose result-affecting fields differ is refused with
    a diff; execution-only fields (paths, workers, batch size) are updated in place.
    """
    root = Path(root)
    path = root / RUN_TOML
    if path.is_file():
        stored = load_run_config(path)
        diff = diff_configs(stored, config)
        if diff:
            raise ConfigError(
                f"{root} was started with a different config; results would mix.\n{diff}\n"
                "fix: use a new --out directory, or relaunch with the stored settings "
                f"(see {path})"
            )
        if runs_stage(stored.target, "generate") != runs_stage(config.target, "generate"):
            raise ConfigError(
                f"{root} holds a {stored.target} run; a {config.target} run needs its own "
                "directory (one generates its images, the other reads a dataset's). "
                "fix: use another --out"
            )
        target = widen_target(stored.target, config.target)
        if target != config.target:
            config = config.model_copy(update={"target": target})
    root.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, config.to_toml())
    return Run(root, config)


def dataset_root(run: Run) -> Path:
    """The folder that the plan's image locations are relative to (manifest folder or dataset;
    the run itself for generated images)."""
    if run.images_in_run:
        return run.root
    path = Path(run.config.dataset)
    return path.parent if path.is_file() else path
