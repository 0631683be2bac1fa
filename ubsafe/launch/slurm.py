"""`ubsafe submit`: each stage as Slurm array jobs through submitit's Slurm executor.

- One array per stage over its missing shards (read from disk at submission); several shards per
  array task when there are many; arrays split so no index reaches the cluster's MaxArraySize.
- Each stage depends on the previous one with `afterany`, so a failed shard does not block the
  others; the reduce runs last in any case and names what is missing.
- A task receives only (run directory, stage, shard indices). It is checkpointable: on preemption or
  time limit submitit requeues it, and the requeued task skips the shards already on disk.
- `NUMBA_NUM_THREADS` and the BLAS thread counts follow the task's CPUs; the profile's setup lines
and
  environment (e.g. `module load`, `HDF5_USE_FILE_LOCKING=FALSE`) run before the task.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ubsafe import atomic
from ubsafe.launch.profiles import Profile, Resources
from ubsafe.launch.slurm_state import JOBS_FILE
from ubsafe.rundir import Run
from ubsafe.stages import Stage, pipeline

log = logging.getLogger(__name__)

DEFAULT_MAX_ARRAY_SIZE = 1001
#: Above this many tasks in one stage, shards are packed several per task.
MAX_TASKS_PER_STAGE = 1000


class ShardTask:
    """The callable each array task runs; checkpointable, so submitit requeues it when preempted."""

    def __call__(self, run_dir: str, stage: str, shards: list[int]) -> dict[str, Any]:
        from ubsafe.launch.worker import run_task

        result = run_task(run_dir, stage, shards)
        return {"done": result.done, "skipped": result.skipped, "seconds": result.seconds}

    def checkpoint(self, run_dir: str, stage: str, shards: list[int]) -> Any:
        import submitit

        # Requeue as is: the task re-checks the disk and runs only the shards not yet done.
        return submitit.helpers.DelayedSubmission(self, run_dir, stage, shards)


def max_array_size() -> int:
    """The cluster's MaxArraySize from `scontrol show config` (Slurm's default 1001 if unknown)."""
    if shutil.which("scontrol") is None:
        return DEFAULT_MAX_ARRAY_SIZE
    try:
        out = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, flags=re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def pack(shards: Sequence[int], per_task: int | None) -> list[list[int]]:
    """Group shards into tasks: `per_task` each, or automatically so a stage has ≤ 1000 tasks."""
    if not shards:
        return []
    size = per_task or max(1, math.ceil(len(shards) / MAX_TASKS_PER_STAGE))
    return [list(shards[i : i + size]) for i in range(0, len(shards), size)]


def split_arrays(tasks: list[list[int]], max_array: int) -> list[list[list[int]]]:
    """Chunks of at most `max_array - 1` tasks: array indices must stay below MaxArraySize."""
    limit = max(1, max_array - 1)
    return [tasks[i : i + limit] for i in range(0, len(tasks), limit)]


@dataclass
class Submission:
    stage: str
    job_ids: list[str] = field(default_factory=list)
    tasks: int = 0
    shards: int = 0
    sbatch_calls: int = 0
    scripts: list[str] = field(default_factory=list)


def thread_setup(resources: Resources) -> list[str]:
    lines = [
        f"export {name}=${{SLURM_CPUS_PER_TASK:-{resources.cpus_per_task}}}"
        for name in (
            "NUMBA_NUM_THREADS",
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
        )
    ]
    lines += [f"export {k}={v!r}" if " " in v else f"export {k}={v}" for k, v in resources.env]
    lines.append("export UBSAFE_PROGRESS=${UBSAFE_PROGRESS:-0}")
    return [*resources.setup, *lines]


def executor_for(run: Run, stage: str, resources: Resources, dependency: str | None) -> Any:
    import submitit

    folder = run.root / "logs" / "slurm" / stage
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
    additional: dict[str, Any] = dict(resources.additional)
    params: dict[str, Any] = {
        "job_name": f"ubsafe-{stage}",
        "cpus_per_task": resources.cpus_per_task,
        "mem": f"{int(resources.mem_gb * 1024)}MB",
        "time": resources.time_min,
        "array_parallelism": resources.array_parallelism,
        "setup": thread_setup(resources),
        "additional_parameters": additional,
        "stderr_to_stdout": True,
    }
    if resources.gpus_per_task:
        params["gpus_per_task"] = resources.gpus_per_task
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(resources, key)
        if value:
            params[key] = value
    if dependency:
        params["dependency"] = dependency
    executor.update_parameters(**params)
    return executor


def sbatch_text(executor: Any, n_tasks: int) -> str:
    """The sbatch script submitit would write for an array of `n_tasks` (for --dry-run)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{executor.python} -u -m submitit.core._submit {executor.folder}"
    return str(
        _make_sbatch_string(
            command=command, folder=executor.folder, map_count=n_tasks, **executor.parameters
        )
    )


def record_job(run: Run, job_id: str, stage: str, shards: list[list[int]]) -> None:
    path = run.root / JOBS_FILE
    line = json.dumps(
        {
            "job_id": job_id,
            "stage": stage,
            "tasks": len(shards),
            "shards": sum(len(t) for t in shards),
            "time": round(time.time()),
        }
    )
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic.write_text(path, existing + line + "\n")


def stages_to_submit(run: Run, target: str, with_report: bool) -> list[tuple[Stage, list[int]]]:
    """Each stage that applies, with its missing shards (all shards of not-yet-done stages)."""
    from ubsafe.stages import STAGES

    chosen = [s for s in pipeline(target) if s.applies(run)]
    if with_report and STAGES["report"].applies(run):
        chosen.append(STAGES["report"])
    return [(stage, stage.missing(run)) for stage in chosen]


def submit(
    run: Run,
    target: str,
    profile: Profile,
    flags: dict[str, Any],
    *,
    shards_per_task: int | None = None,
    dry_run: bool = False,
    with_report: bool = True,
) -> list[Submission]:
    """Submit every missing shard of `target` as dependent array jobs; return what was submitted."""
    max_array = max_array_size()
    submissions: list[Submission] = []
    previous: list[str] = []
    task = ShardTask()
    for stage, missing in stages_to_submit(run, target, with_report):
        if not missing:
            log.info("%s: nothing missing", stage.name)
            continue
        resources = profile.for_stage(stage.name, flags)
        tasks = pack(missing, shards_per_task if stage.sharded else None)
        dependency = f"afterany:{':'.join(previous)}" if previous else None
        executor = executor_for(run, stage.name, resources, dependency)
        sub = Submission(stage.name, shards=len(missing))
        current: list[str] = []
        for chunk in split_arrays(tasks, max_array):
            sub.tasks += len(chunk)
            sub.sbatch_calls += 1
            if dry_run:
                sub.scripts.append(sbatch_text(executor, len(chunk)))
                continue
            n = len(chunk)
            jobs = executor.map_array(task, [str(run.root)] * n, [stage.name] * n, chunk)
            job_id = jobs[0].job_id.split("_")[0]
            current.append(job_id)
            sub.job_ids.append(job_id)
            record_job(run, job_id, stage.name, chunk)
        previous = current or previous
        submissions.append(sub)
    return submissions


def environment_note() -> str:
    """Where submitit's own files go; Slurm needs them on a shared filesystem."""
    return (
        "submitit's job files are under RUN/logs/slurm/<stage>/ (the run directory must be shared)"
    )
