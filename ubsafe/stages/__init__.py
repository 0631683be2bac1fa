"""The pipeline's stages, what each declares it needs, and the pipelines of the targets.

Each stage is one module in this package with the same small surface:

    NAME: str                      the stage's name (also its folder under shards/ and logs/)
    SHARDED: bool                  one task per shard, or one task for the whole run
    NEEDS: Needs                   GPU or CPU, what it reads, what it writes (read by `launch/`)
    applies(run) -> bool           whether this run needs the stage at all
    is_done(run, shard) -> bool    read from disk: the final file exists with matching attributes
    run_shard(run, shard) -> None  pure function of (frozen config, shard); writes atomically

Adding a stage: its module here, and its name in `STAGE_NAMES` (in pipeline order) and in the
targets that run it (`ubsafe/targets.py`). Non-sharded stages use shard 0. Modules are imported
only when a stage is used, so the CLI stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from ubsafe.targets import TARGETS, get_target

if TYPE_CHECKING:
    from ubsafe.rundir import Run


@dataclass(frozen=True)
class Needs:
    """What a stage declares next to its code, for the launchers and for readers of the code.

    `inputs` and `outputs` name run-directory paths (`<cache>` is the embedding cache); `gpu` is
    True when the stage runs encoders or image models, False when it reads cached arrays only, or
    a function of the run when that depends on the run (e.g. on its classifiers). `after_success`:
    under Slurm it starts only when the stage before it succeeded (else however that one ended).
    `follows`: the stage joins every pipeline that has that stage, right after it. `kernels`: it
    runs the Numba kernels, so a task warms their shared cache before its first shard
    (`ubsafe.kernels.cache`).
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    gpu: bool | Callable[[Run], bool] = False
    after_success: bool = False
    follows: str | None = None
    kernels: bool = False


@dataclass(frozen=True)
class Stage:
    name: str

    @property
    def module(self) -> str:
        return f"ubsafe.stages.{self.name}"

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    @property
    def sharded(self) -> bool:
        return bool(self.load().SHARDED)

    @property
    def needs(self) -> Needs:
        needs = self.load().NEEDS
        assert isinstance(needs, Needs), f"{self.module}.NEEDS must be a Needs"
        return needs

    def needs_gpu(self, run: Run | None = None) -> bool:
        """Whether a task of this stage asks for a GPU (without a run: a stage that decides per
        run does not)."""
        gpu = self.needs.gpu
        if callable(gpu):
            return run is not None and bool(gpu(run))
        return gpu

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


#: Every stage, in the order the pipelines run them.
STAGE_NAMES: tuple[str, ...] = (
    "generate",
    "embed",
    "perturb",
    "fit",
    "finetune",
    "score",
    "attack",
    "compare",
    "detect",
    "gather",
    "reduce",
    "report",
)
STAGES: dict[str, Stage] = {name: Stage(name) for name in STAGE_NAMES}

#: target → its stages (derived from `ubsafe.targets.TARGETS`, the one table)
PIPELINES: dict[str, tuple[str, ...]] = {name: t.stages for name, t in TARGETS.items()}


def pipeline(target: str) -> list[Stage]:
    """What `ubsafe run TARGET` runs, in order (the target's stages, from `ubsafe.targets`)."""
    return [STAGES[name] for name in get_target(target).stages]


def target_stages(target: str) -> list[Stage]:
    """What `ubsafe submit` and `ubsafe status` complete for a target: its pipeline, plus the
    stages that declare they follow one of it (the report after the reduce)."""
    stages = pipeline(target)
    names = {stage.name for stage in stages}
    for stage in STAGES.values():
        follows = stage.needs.follows
        if follows in names and stage.name not in names:
            stages.insert([s.name for s in stages].index(follows) + 1, stage)
            names.add(stage.name)
    return stages
