"""The pipeline's stages and the pipelines (targets) built from them.

Each stage is one module in this package with the same small surface:

    NAME: str                      the stage's name (also its folder under shards/ and logs/)
    SHARDED: bool                  one task per shard, or one task for the whole run
    applies(run) -> bool           whether this run needs the stage at all
    is_done(run, shard) -> bool    read from disk: the final file exists with matching attributes
    run_shard(run, shard) -> None  pure function of (frozen config, shard); writes atomically

Non-sharded stages use shard 0. Modules are imported only when a stage runs, so the CLI stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ubsafe.rundir import Run


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    sharded: bool

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def applies(self, run: Run) -> bool:
        return bool(self.load().applies(run))

    def shards(self, run: Run) -> list[int]:
        return list(range(run.n_shards)) if self.sharded else [0]

    def is_done(self, run: Run, shard: int) -> bool:
        return bool(self.load().is_done(run, shard))

    def missing(self, run: Run) -> list[int]:
        """Shards whose final output is not on disk (what a relaunch runs)."""
        module = self.load()
        return [s for s in self.shards(run) if not module.is_done(run, s)]

    def run_shard(self, run: Run, shard: int) -> None:
        self.load().run_shard(run, shard)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("embed", "ubsafe.stages.embed", sharded=True),
        Stage("perturb", "ubsafe.stages.perturb", sharded=True),
        Stage("fit", "ubsafe.stages.fit", sharded=False),
        Stage("finetune", "ubsafe.stages.finetune", sharded=False),
        Stage("attack", "ubsafe.stages.attack", sharded=True),
        Stage("score", "ubsafe.stages.score", sharded=True),
        Stage("compare", "ubsafe.stages.compare", sharded=True),
        Stage("reduce", "ubsafe.stages.reduce", sharded=False),
        Stage("report", "ubsafe.stages.report", sharded=False),
    )
}

#: What `ubsafe run|submit STAGE` runs, in order. Each stage's `applies` drops what a run does not
#: need.
PIPELINES: dict[str, tuple[str, ...]] = {
    "embed": ("embed",),
    "effectiveness": ("embed", "fit", "finetune", "score", "reduce"),
    "robustness": ("embed", "perturb", "fit", "finetune", "score", "attack", "compare", "reduce"),
    "all": ("embed", "perturb", "fit", "finetune", "score", "attack", "compare", "reduce"),
}

TARGETS: tuple[str, ...] = tuple(PIPELINES)


def pipeline(target: str) -> list[Stage]:
    if target not in PIPELINES:
        raise ValueError(f"unknown stage {target!r}; choose one of {', '.join(PIPELINES)}")
    return [STAGES[name] for name in PIPELINES[target]]
