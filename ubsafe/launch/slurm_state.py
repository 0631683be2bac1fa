"""What was submitted for a run, and what Slurm says about it.

`ubsafe submit` appends one line per array job to `logs/slurm/jobs.jsonl`. Nothing here decides
whether a shard is done (the disk does); it serves to refuse a resubmission while the run's jobs
are still queued, and to add the scheduler's view to `ubsafe status`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ubsafe.rundir import Run

JOBS_FILE = Path("logs") / "slurm" / "jobs.jsonl"
_TIMEOUT_S = 30


@dataclass(frozen=True)
class JobRecord:
    """One sbatch call: an array (or single) job running `stage` on `tasks` (shards per task)."""

    submission: str
    job_id: str
    stage: str
    tasks: tuple[tuple[int, ...], ...]
    dependency: str | None = None

    @property
    def shards(self) -> list[int]:
        return [s for task in self.tasks for s in task]

    def to_json(self) -> str:
        return json.dumps(
            {
                "submission": self.submission,
                "job_id": self.job_id,
                "stage": self.stage,
                "dependency": self.dependency,
                "tasks": [list(t) for t in self.tasks],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> JobRecord:
        return cls(
            submission=str(record["submission"]),
            job_id=str(record["job_id"]),
            stage=str(record["stage"]),
            tasks=tuple(tuple(int(s) for s in t) for t in record.get("tasks", ())),
            dependency=record.get("dependency"),
        )


def jobs_path(run: Run) -> Path:
    return run.root / JOBS_FILE


def record_jobs(run: Run, records: Iterable[JobRecord]) -> None:
    """Append records to the run's job list (one line each, written in one call)."""
    text = "".join(r.to_json() + "\n" for r in records)
    if not text:
        return
    path = jobs_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def submitted_jobs(run: Run) -> list[JobRecord]:
    """Every job recorded for the run, oldest first (unreadable lines are ignored)."""
    path = jobs_path(run)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(JobRecord.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return records


def latest_submission(run: Run) -> list[JobRecord]:
    """The jobs of the most recent `ubsafe submit` of this run."""
    jobs = submitted_jobs(run)
    if not jobs:
        return []
    last = jobs[-1].submission
    return [j for j in jobs if j.submission == last]


def _slurm(args: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def queued(job_ids: Sequence[str]) -> set[str] | None:
    """Which of these job ids (array job ids) Slurm still has queued or running.

    None when `squeue` is unavailable or does not answer.
    """
    if not job_ids:
        return set()
    result = _slurm(["squeue", "-h", "-o", "%F|%i", "-j", ",".join(job_ids)])
    if result is None:
        return None
    if result.returncode != 0:
        # A list of ids that all left the queue is refused as invalid, not answered empty.
        return set() if "Invalid job id" in result.stderr else None
    wanted = set(job_ids)
    found: set[str] = set()
    for line in result.stdout.splitlines():
        array_id, _, task_id = line.strip().partition("|")
        for candidate in (array_id, task_id):
            if candidate in wanted:
                found.add(candidate)
    return found


_RANGE = re.compile(r"^(\d+)_\[(.+)\]$")


def _count_tasks(job_field: str) -> int:
    """Tasks in an sacct JobID field: `12_3` is one, `12_[4-9,11%2]` is seven."""
    match = _RANGE.match(job_field)
    if not match:
        return 1
    total = 0
    for part in match.group(2).split("%")[0].split(","):
        low, _, high = part.partition("-")
        total += int(high) - int(low) + 1 if high else 1
    return total


def task_states(job_ids: Sequence[str]) -> dict[str, Counter[str]] | None:
    """Per job id, how many tasks are in each Slurm state (`sacct`); None when sacct fails."""
    if not job_ids:
        return {}
    result = _slurm(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)])
    if result is None or result.returncode != 0:
        return None
    states: dict[str, Counter[str]] = {j: Counter() for j in job_ids}
    for line in result.stdout.splitlines():
        job_field, _, state = line.strip().partition("|")
        base = job_field.split("_")[0]
        if base in states and state:
            # "CANCELLED by 0" -> CANCELLED
            states[base][state.split()[0]] += _count_tasks(job_field)
    return states


def active_tasks(task_ids: Sequence[str]) -> set[str] | None:
    """Which of these tasks (`A_a` array tasks or `J` jobs) Slurm still has queued or running.

    One `squeue` call for all of them; None when it does not answer.
    """
    if not task_ids:
        return set()
    jobs = sorted({t.split("_")[0] for t in task_ids})
    result = _slurm(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(jobs)])
    if result is None:
        return None
    if result.returncode != 0:
        return set() if "Invalid job id" in result.stderr else None
    listed = {line.strip() for line in result.stdout.splitlines()}
    return {t for t in task_ids if t in listed}


def describe_jobs(run: Run) -> list[str]:
    """Lines on the latest submission's jobs with Slurm's task states (extra information)."""
    jobs = latest_submission(run)
    if not jobs:
        return []
    from ubsafe.launch.cluster import explain_reason, pending_reasons

    states = task_states([j.job_id for j in jobs])
    reasons = pending_reasons([j.job_id for j in jobs]) or {}
    lines = ["scheduler (extra information; completion is read from disk):"]
    for job in jobs:
        n_tasks = len(job.tasks)
        if states is None:
            summary = "sacct does not answer"
        else:
            counts = states.get(job.job_id) or Counter()
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "not in sacct"
        lines.append(
            f"  job {job.job_id} ({job.stage}, {n_tasks} task(s), "
            f"{len(job.shards)} shard(s)): {summary}"
        )
        for reason, count in sorted(reasons.get(job.job_id, {}).items()):
            never, meaning = explain_reason(reason)
            verdict = "NEVER starts by waiting" if never else "starts by itself"
            lines.append(
                f"    {count} task(s) PENDING ({reason}): {verdict}: {meaning}"
                + (f" (`scancel {job.job_id}`)" if never else "")
            )
    return lines
