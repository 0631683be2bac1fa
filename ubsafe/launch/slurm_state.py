"""The scheduler's view of a run's submitted jobs: extra information for `ubsafe status` only."""

from __future__ import annotations

import json
import shutil
import subprocess

from ubsafe.rundir import Run

JOBS_FILE = "jobs.jsonl"


def submitted_jobs(run: Run) -> list[dict[str, object]]:
    path = run.root / JOBS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def describe_jobs(run: Run) -> list[str]:
    """One line per submitted job with Slurm's state counts, when `sacct` answers."""
    jobs = submitted_jobs(run)
    if not jobs or shutil.which("sacct") is None:
        return []
    lines = ["  scheduler (extra information; completion is read from disk):"]
    for job in jobs[-20:]:
        job_id = str(job.get("job_id"))
        try:
            out = subprocess.run(
                ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        states: dict[str, int] = {}
        for state in out.split():
            states[state] = states.get(state, 0) + 1
        summary = ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "unknown to sacct"
        lines.append(f"    job {job_id} ({job.get('stage')}): {summary}")
    return lines
