"""Where a run stands, read from its directory (the scheduler adds information, never decides).

Per stage and shard, one of:
- done         the stage's final file is there and matches the run (the stage's own `is_done`);
- running      a running marker whose process is alive (same host) or whose job Slurm still runs;
- failed       `error.json` beside the shard's log: exception type, message, traceback, job id;
- interrupted  a running marker whose process is gone (killed, node lost): a relaunch redoes it;
- missing      nothing yet.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ubsafe.launch.worker import running_path
from ubsafe.rundir import Run
from ubsafe.stages import target_stages

STATES = ("done", "running", "failed", "interrupted", "missing")


@dataclass
class ShardState:
    shard: int
    state: str
    #: the shard's error.json (failed) or running marker (running, interrupted)
    record: dict[str, Any] | None = None
    #: the shard's own log file, where the stage writes
    log: Path | None = None
    #: the Slurm task's stdout (submitit's log), when the record names a job that has one
    slurm_log: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "state": self.state,
            "record": self.record,
            "log": str(self.log) if self.log else None,
            "slurm_log": str(self.slurm_log) if self.slurm_log else None,
        }


@dataclass
class StageStatus:
    stage: str
    shards: list[ShardState] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for s in self.shards if s.state == state)

    def of(self, state: str) -> list[ShardState]:
        return [s for s in self.shards if s.state == state]

    @property
    def complete(self) -> bool:
        return all(s.state == "done" for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "counts": {state: self.count(state) for state in STATES},
            "shards": [s.to_json() for s in self.shards if s.state != "done"],
        }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _process_start(pid: int) -> float | None:
    """When process `pid` started (Unix time), from /proc; None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    # Field 22 (starttime, clock ticks since boot) counted after the parenthesised command name.
    fields = stat[stat.rindex(")") + 2 :].split()
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_alive(record: dict[str, Any]) -> bool | None:
    """Whether the marker's process runs: None when it ran on another host (cannot check here).

    A live pid that started after the marker was written is another process (pid reuse).
    """
    if record.get("host") != socket.gethostname():
        return None
    try:
        pid = int(record["pid"])
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError):
        return False
    except PermissionError:
        pass
    started = _process_start(pid)
    marker_time = record.get("started")
    if started is not None and isinstance(marker_time, int | float):
        return started <= marker_time + 2.0
    return True


def settle_remote_markers(statuses: list[StageStatus]) -> None:
    """Decide running vs interrupted for markers from other hosts, with one `squeue` call.

    The marker's process cannot be checked from here; its Slurm task can. Without an answer
    from the scheduler the marker is trusted (running).
    """
    remote = [
        shard
        for stage in statuses
        for shard in stage.shards
        if shard.state == "running" and process_alive(shard.record or {}) is None
    ]
    tasks = [str((s.record or {}).get("job_id")) for s in remote if (s.record or {}).get("job_id")]
    if not tasks:
        return
    from ubsafe.launch.slurm_state import active_tasks

    active = active_tasks(tasks)
    if active is None:
        return
    for shard in remote:
        job = (shard.record or {}).get("job_id")
        if job and str(job) not in active:
            shard.state = "interrupted"


def slurm_log(run: Run, stage: str, job_id: Any) -> Path | None:
    """submitit's stdout file of the Slurm task `job_id` (`A_a` or `J`) for this stage, if any."""
    if not job_id or not re.fullmatch(r"\d+(_\d+)?", str(job_id)):
        return None
    path = run.root / "logs" / "slurm" / stage / f"{job_id}_0_log.out"
    return path if path.is_file() else None


def shard_state(run: Run, stage: str, shard: int, done: bool) -> ShardState:
    """The shard's state read from disk (see the module docstring)."""
    log = run.log_path(stage, shard)
    log_or_none = log if log.is_file() else None
    if done:
        return ShardState(shard, "done", log=log_or_none)
    marker = _read_json(running_path(run, stage, shard))
    if marker is not None:
        # A marker from another host stays "running" here; `settle_remote_markers` decides.
        state = "interrupted" if process_alive(marker) is False else "running"
        return ShardState(
            shard, state, marker, log_or_none, slurm_log(run, stage, marker.get("job_id"))
        )
    error = _read_json(run.error_path(stage, shard))
    if error is not None:
        return ShardState(
            shard, "failed", error, log_or_none, slurm_log(run, stage, error.get("job_id"))
        )
    return ShardState(shard, "missing", log=log_or_none)


def run_status(run: Run, target: str | None = None) -> list[StageStatus]:
    """Per stage of the run's target that applies, in pipeline order: every shard's state."""
    statuses = []
    for stage in target_stages(target or run.config.target):
        if not stage.applies(run):
            continue
        module = stage.load()
        shards = [
            shard_state(run, stage.name, s, module.is_done(run, s)) for s in stage.shards(run)
        ]
        statuses.append(StageStatus(stage.name, shards))
    settle_remote_markers(statuses)
    return statuses


def last_frame(traceback_text: str) -> str | None:
    """`file:line in function` of the innermost frame of a formatted traceback."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', traceback_text or "")
    if not frames:
        return None
    path, line, function = frames[-1]
    return f"{path}:{line} in {function}"


def age(record: dict[str, Any]) -> str:
    """How long ago a record's `started` time was, e.g. `3 min`."""
    started = record.get("started")
    if not isinstance(started, int | float):
        return "?"
    seconds = max(0.0, time.time() - started)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def embed_skips(run: Run) -> dict[str, dict[str, int]]:
    """Per encoder, how many images its finished embed shards skipped for each reason (the images
    that will be in skipped.csv; an embed-only run shows them nowhere else)."""
    from collections import Counter

    from ubsafe.embeddings import skipped_rows
    from ubsafe.stages.embed import cache_key, encoder_keys

    skips: dict[str, dict[str, int]] = {}
    for key in encoder_keys(run):
        counts: Counter[str] = Counter()
        for shard in range(run.n_shards):
            counts.update(
                reason for _, reason in skipped_rows(run, cache_key(run, key), "clean", shard)
            )
        if counts:
            skips[key] = dict(counts.most_common())
    return skips
