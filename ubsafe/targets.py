"""The targets of `ubsafe run|submit TARGET`: one table, name → the stages it runs, in order.

Everything else derives from this table: the config's validation of `target`, the CLI's choices
and help, the pipelines (`ubsafe.stages.pipeline`), status and submission. Adding a target is one
line in `TARGETS`; its stages must be names in `ubsafe.stages.STAGES`. Each stage's `applies(run)`
still drops what a run does not need (no fitted classifier → no fit).

This module imports nothing heavy: the config and `ubsafe --help` read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    #: the stages it runs, in order (the report follows the reduce; see `ubsafe.stages`)
    stages: tuple[str, ...]
    #: one line for `--help`
    summary: str


_ROBUSTNESS = ("embed", "perturb", "fit", "finetune", "score", "attack", "compare", "reduce")

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("embed", ("embed",), "clean embeddings only (fills the cache)"),
        Target(
            "effectiveness",
            ("embed", "fit", "finetune", "score", "reduce"),
            "F1 & co. with confidence intervals",
        ),
        Target("robustness", _ROBUSTNESS, "effectiveness, plus perturbations and attacks"),
        Target("all", _ROBUSTNESS, "everything ubsafe measures"),
        Target(
            "mitigation",
            ("generate", "embed", "score", "detect", "gather", "reduce"),
            "images from prompts by text-to-image generators, judged by the classifiers",
        ),
    )
}

TARGET_NAMES: tuple[str, ...] = tuple(TARGETS)


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


def runs_stage(target: str, stage: str) -> bool:
    """Whether `target` runs `stage` (e.g. whether a run measures robustness: `compare`)."""
    return stage in get_target(target).stages


def widen_target(stored: str, new: str) -> str:
    """A relaunch for another target keeps what the run has: the stored target stays when its
    stages strictly include the new one's (robustness implies effectiveness), else the new one."""
    old_stages, new_stages = set(get_target(stored).stages), set(get_target(new).stages)
    return stored if new_stages < old_stages else new


def help_lines() -> str:
    """`name  summary` per target, for `--help` texts."""
    width = max(len(name) for name in TARGETS)
    return "\n".join(f"  {t.name:<{width}}  {t.summary}" for t in TARGETS.values())
