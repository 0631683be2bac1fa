"""Where a run stands, read from its directory alone (the scheduler is extra information only)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ubsafe.launch.worker import running_path
from ubsafe.rundir import Run
from ubsafe.stages import PIPELINES, STAGES

STATES = ("done", "running", "failed", "interrupted", "missing")


@dataclass
class ShardState:
    shard: int
    state: str
    error: dict[str, Any] | None = None
    running: dict[str, Any] | None = None
    log: Path | None = None


@dataclass
class StageStatus:
    stage: str
    shards: list[ShardState] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for s in self.shards if s.state == state)

    def of(self, state: str) -> list[ShardState]:
        return [s for s in self.shards if s.state == state]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _alive(record: dict[str, Any]) -> bool:
    """Whether a running marker's process still exists (only checkable on its own host)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


def shard_state(run: Run, stage: str, shard: int, done: bool) -> ShardState:
    log = run.log_path(stage, shard)
    if done:
        return ShardState(shard, "done", log=log if log.exists() else None)
    marker = _read_json(running_path(run, stage, shard))
    if marker is not None:
        return ShardState(
            shard, "running" if _alive(marker) else "interrupted", running=marker, log=log
        )
    error = _read_json(run.error_path(stage, shard))
    if error is not None:
        return ShardState(shard, "failed", error=error, log=log)
    return ShardState(shard, "missing", log=log if log.exists() else None)


def run_status(run: Run, target: str | None = None) -> list[StageStatus]:
    """Per stage of the run's target that applies: the state of every shard."""
    statuses = []
    for name in PIPELINES[target or run.config.target]:
        stage = STAGES[name]
        if not stage.applies(run):
            continue
        module = stage.load()
        shards = [shard_state(run, name, s, module.is_done(run, s)) for s in stage.shards(run)]
        statuses.append(StageStatus(name, shards))
    return statuses
