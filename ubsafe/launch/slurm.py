"""`ubsafe submit`: each stage of a target as Slurm array jobs, through submitit's Slurm executor.

- One array per stage over the shards missing on disk at submission; several shards per array task
  when a stage has more than `MAX_TASKS_PER_STAGE` of them (or `--shards-per-task`); an array never
  reaches the cluster's MaxArraySize (read from `scontrol show config`), so a big stage becomes
  several arrays.
- Each stage waits for the previous one with `afterany`: a failed shard does not hold back the
  others, and the reduce runs last in any case, naming what is missing. The report, as after
  `ubsafe run`, follows a reduce that succeeded (`afterok`).
- A task receives only (run directory, stage, shard indices). It is checkpointable: on preemption
  or at its time limit submitit requeues it, and the requeued task skips shards already on disk.
- The task's thread counts (`NUMBA_NUM_THREADS`, BLAS) follow its CPUs; the profile's setup lines
  and environment (`module load ...`, `HDF5_USE_FILE_LOCKING=FALSE`) run first.
"""

from __future__ import annotations

import logging
import math
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ubsafe.config import ConfigError
from ubsafe.launch.profiles import Profile, Resources
from ubsafe.launch.slurm_state import JobRecord, queued, record_jobs, submitted_jobs
from ubsafe.rundir import Run
from ubsafe.stages import target_stages

log = logging.getLogger(__name__)

#: Slurm's default MaxArraySize (array indices 0..1000).
DEFAULT_MAX_ARRAY_SIZE = 1001
#: Above this many shards in one stage, shards are packed several per array task.
MAX_TASKS_PER_STAGE = 1000
#: Thread pools sized from the task's CPUs (Slurm without CPU binding shows every core).
THREAD_VARIABLES = (
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)


class SubmitError(ConfigError):
    """Submission refused or failed; the message names the jobs and the way out."""


class ShardTask:
    """What each array task runs: `run_task(run_dir, stage, shards)`, requeued when preempted.

    Stateless, so submitit pickles it by reference; the arguments are a path, a stage name and
    shard indices, never a model.
    """

    def __call__(self, run_dir: str, stage: str, shards: list[int]) -> dict[str, Any]:
        from ubsafe.launch.worker import run_task
        from ubsafe.logs import configure, verbosity

        # the task's Slurm log gets what a worker's terminal gets: each shard's start, end and
        # traceback (the shard's own log has the rest)
        configure(max(verbosity(), 1))
        result = run_task(run_dir, stage, shards)
        return {"done": result.done, "skipped": result.skipped, "seconds": result.seconds}

    def checkpoint(self, run_dir: str, stage: str, shards: list[int]) -> Any:
        """submitit calls this on preemption or near the time limit: requeue the same shards.

        The requeued task re-checks the disk and redoes only the shards not finished.
        """
        import submitit

        return submitit.helpers.DelayedSubmission(self, run_dir, stage, shards)


def parse_max_array_size(config_text: str) -> int | None:
    """MaxArraySize from the text of `scontrol show config`, if present."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", config_text, flags=re.MULTILINE)
    return int(match.group(1)) if match else None


def cluster_max_array_size() -> int:
    """The cluster's MaxArraySize (`scontrol show config`); Slurm's default 1001 if unknown."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    return parse_max_array_size(out) or DEFAULT_MAX_ARRAY_SIZE


def pack(
    shards: Sequence[int], per_task: int | None, max_tasks: int = MAX_TASKS_PER_STAGE
) -> list[list[int]]:
    """Consecutive shards grouped into tasks: `per_task` each, or as few as keep ≤ `max_tasks`."""
    if not shards:
        return []
    size = per_task or max(1, math.ceil(len(shards) / max_tasks))
    return [list(shards[i : i + size]) for i in range(0, len(shards), size)]


def split_arrays(tasks: Sequence[list[int]], max_array_size: int) -> list[list[list[int]]]:
    """Arrays of at most `max_array_size` tasks: Slurm refuses an index ≥ MaxArraySize."""
    limit = max(1, max_array_size)
    return [list(tasks[i : i + limit]) for i in range(0, len(tasks), limit)]


@dataclass
class StagePlan:
    """What one stage submits: its missing shards, as arrays of tasks of shards."""

    stage: str
    sharded: bool
    missing: list[int]
    resources: Resources
    arrays: list[list[list[int]]]

    @property
    def n_tasks(self) -> int:
        return sum(len(a) for a in self.arrays)


def cpu_only(run: Run, stage: str) -> bool:
    """Whether the stage's tasks need no GPU, as the stage declares for this run (`NEEDS.gpu`)."""
    from ubsafe.stages import STAGES

    return not STAGES[stage].needs_gpu(run)


def plan_submission(
    run: Run,
    target: str,
    profile: Profile,
    flags: Mapping[str, Any],
    *,
    max_array_size: int | None = None,
) -> list[StagePlan]:
    """Per stage of `target` that the run needs: its missing shards, packed and split.

    A stage with nothing missing has no arrays. `max_array_size` defaults to the profile's setting,
    else the cluster's.
    """
    plans = []
    cluster_limit: int | None = max_array_size
    for stage in target_stages(target):
        if not stage.applies(run):
            continue
        resources = profile.for_stage(stage.name, flags, cpu_only=cpu_only(run, stage.name))
        limit = resources.max_array_size or cluster_limit
        if limit is None:
            limit = cluster_limit = cluster_max_array_size()
        missing = stage.missing(run)
        tasks = pack(missing, resources.shards_per_task if stage.sharded else None)
        plans.append(
            StagePlan(stage.name, stage.sharded, missing, resources, split_arrays(tasks, limit))
        )
    return plans


def check_cluster(
    run: Run, target: str, profile: Profile, flags: Mapping[str, Any], *, strict: bool
) -> list[str]:
    """Every stage of `target` that the run needs, as the profile and flags would request it,
    against the cluster's nodes (`sinfo`): a request no node can run is refused, naming the largest
    node and the flag; a GPU stage without a GPU, or `--out`/the cache on a node-local path, is a
    warning, returned (refused under `strict`). Reads the config only: nothing need be planned."""
    from ubsafe.launch.cluster import Request, check_submission, read_cluster

    requests = []
    gpu_stages = []
    for stage in target_stages(target):
        if not stage.applies(run):
            continue
        cpu = cpu_only(run, stage.name)
        resources = profile.for_stage(stage.name, flags, cpu_only=cpu)
        if not cpu:
            gpu_stages.append(stage.name)
        requests.append(
            Request(
                stage.name,
                resources.partition,
                resources.cpus_per_task,
                resources.mem_gb,
                resources.gpus_per_task,
                resources.time_min,
            )
        )
    paths = [("--out", str(run.root))]
    if run.config.cache_dir:
        paths.append(("--cache-dir", run.config.cache_dir))
    return check_submission(
        requests,
        gpu_stages=gpu_stages,
        paths=paths,
        device=run.config.device,
        strict=strict,
        cluster=read_cluster(),
    )


def setup_lines(resources: Resources) -> list[str]:
    """Shell lines run before each task: the profile's setup, its environment, thread counts."""
    lines = list(resources.setup)
    lines += [f"export {name}={_double_quoted(value)}" for name, value in resources.env]
    lines += [
        f"export {name}=${{SLURM_CPUS_PER_TASK:-{resources.cpus_per_task}}}"
        for name in THREAD_VARIABLES
    ]
    lines.append("export UBSAFE_PROGRESS=${UBSAFE_PROGRESS:-0}")
    return lines


def _double_quoted(value: str) -> str:
    """Shell double quotes: `$USER` in a profile's [env] expands in the job, nothing else does."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return f'"{escaped}"'


def signal_delay(resources: Resources) -> int:
    """Seconds before the time limit at which submitit's requeue signal comes (≤ a quarter)."""
    if resources.signal_delay_s is not None:
        return resources.signal_delay_s
    return max(10, min(90, resources.time_min * 60 // 4))


def executor_parameters(
    run: Run, stage: str, resources: Resources, dependency: str | None
) -> dict[str, Any]:
    """submitit SlurmExecutor parameters for one stage's arrays."""
    params: dict[str, Any] = {
        "job_name": f"ubsafe-{stage}-{run.root.name}",
        "cpus_per_task": resources.cpus_per_task,
        "mem": f"{max(1, round(resources.mem_gb * 1024))}MB",
        "time": resources.time_min,
        "array_parallelism": resources.array_parallelism,
        "signal_delay_s": signal_delay(resources),
        "setup": setup_lines(resources),
        "additional_parameters": dict(resources.additional),
        "stderr_to_stdout": True,
    }
    if resources.gpus_per_task:
        # One task per job: its node's GPUs are the task's (sbatch refuses --gpus-per-task
        # without --ntasks).
        params["gpus_per_node"] = resources.gpus_per_task
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(resources, key)
        if value:
            params[key] = value
    if dependency:
        params["dependency"] = dependency
        if dependency.startswith("afterok"):
            # Cancelled, not left pending forever, when what it waits for fails.
            params["additional_parameters"]["kill-on-invalid-dep"] = "yes"
    return params


def stage_folder(run: Run, stage: str) -> Path:
    """submitit's files for a stage (pickles, sbatch scripts, task stdout) under the run."""
    return run.root.resolve() / "logs" / "slurm" / stage


def make_executor(run: Run, stage: str, resources: Resources, dependency: str | None) -> Any:
    import submitit

    executor = submitit.SlurmExecutor(
        folder=stage_folder(run, stage), max_num_timeout=3, python=resources.python
    )
    executor.update_parameters(**executor_parameters(run, stage, resources, dependency))
    return executor


def sbatch_script(
    run: Run, stage: str, resources: Resources, n_tasks: int, dependency: str | None
) -> str:
    """The sbatch script submitit writes for an array of `n_tasks` tasks (a job if one)."""
    from submitit.slurm.slurm import _make_sbatch_string

    executor = make_executor(run, stage, resources, dependency)
    return str(
        _make_sbatch_string(
            command=executor._submitit_command_str,
            folder=executor.folder,
            map_count=n_tasks if n_tasks > 1 else None,
            **executor.parameters,
        )
    )


@dataclass
class Submitted:
    """What `submit` did (or would do) for one stage."""

    stage: str
    shards: int
    tasks: int
    job_ids: list[str] = field(default_factory=list)
    sbatch_calls: int = 0
    scripts: list[str] = field(default_factory=list)
    seconds: float = 0.0


def dependency_kind(stage: str) -> str:
    """How a stage waits for the one before: after it succeeded when the stage declares so
    (`NEEDS.after_success`: the report after the reduce), else however it ended (its own check
    names what is missing)."""
    from ubsafe.stages import STAGES

    return "afterok" if STAGES[stage].needs.after_success else "afterany"


def check_nothing_queued(run: Run) -> None:
    """Refuse to submit while jobs of an earlier submission of this run are still queued."""
    recorded = sorted({j.job_id for j in submitted_jobs(run)})
    if not recorded:
        return
    active = queued(recorded)
    if active:
        ids = " ".join(sorted(active))
        raise SubmitError(
            f"{run.root}: jobs {ids} of an earlier submission are still queued or running; "
            f"a second submission would run the same shards twice. Wait for them "
            f"(`ubsafe status {run.root}`), or cancel them (`scancel {ids}`) and submit again"
        )


def submit(
    run: Run,
    target: str,
    profile: Profile,
    flags: Mapping[str, Any],
    *,
    dry_run: bool = False,
    max_array_size: int | None = None,
    shown_as: Run | None = None,
) -> list[Submitted]:
    """Submit the shards of `target` missing on disk as chained arrays; return what was sent.

    With `dry_run`, nothing is submitted or written: `Submitted.scripts` holds the sbatch scripts,
    written for the run directory `shown_as` when given (a run planned in a scratch directory).
    `check_cluster` comes first (the command line calls it before planning).
    """
    plans = plan_submission(run, target, profile, flags, max_array_size=max_array_size)
    if not dry_run:
        check_nothing_queued(run)
    submission = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 10**6:06d}"
    results: list[Submitted] = []
    previous: list[str] = []
    for plan in plans:
        if not plan.arrays:
            log.info("%s: every shard is done", plan.stage)
            continue
        started = time.perf_counter()
        kind = dependency_kind(plan.stage)
        if dry_run:
            placeholder = f"{kind}:<job ids of {results[-1].stage}>" if results else None
            done = Submitted(plan.stage, len(plan.missing), plan.n_tasks)
            for array in plan.arrays:
                done.scripts.append(
                    sbatch_script(
                        shown_as or run, plan.stage, plan.resources, len(array), placeholder
                    )
                )
                done.sbatch_calls += 1
        else:
            dependency = f"{kind}:{':'.join(previous)}" if previous else None
            try:
                done = _submit_stage(run, plan, dependency, submission)
            except SubmitError as exc:
                raise SubmitError(_with_submitted(str(exc), results)) from None
            previous = done.job_ids
        done.seconds = time.perf_counter() - started
        results.append(done)
    return results


def _with_submitted(message: str, results: list[Submitted]) -> str:
    """An error message that also names the jobs this submission had already sent."""
    ids = [j for r in results for j in r.job_ids]
    if not ids:
        return message
    return (
        f"{message}. Submitted before the error (recorded for `ubsafe status`): jobs "
        f"{' '.join(ids)} ({', '.join(r.stage for r in results)}); cancel them with "
        f"`scancel {' '.join(ids)}` before submitting again, or let them run"
    )


def _submit_stage(run: Run, plan: StagePlan, dependency: str | None, submission: str) -> Submitted:
    from submitit.core.utils import FailedJobError

    executor = make_executor(run, plan.stage, plan.resources, dependency)
    task = ShardTask()
    done = Submitted(plan.stage, len(plan.missing), plan.n_tasks)
    for array in plan.arrays:
        n = len(array)
        try:
            jobs = executor.map_array(task, [str(run.root.resolve())] * n, [plan.stage] * n, array)
        except FailedJobError as exc:
            raise SubmitError(
                _with_submitted(
                    f"sbatch refused the {plan.stage} array of {n} task(s): {str(exc).strip()} "
                    f"(scripts under {stage_folder(run, plan.stage)})",
                    [done] if done.job_ids else [],
                )
            ) from None
        job_id = str(jobs[0].job_id).split("_")[0]
        done.job_ids.append(job_id)
        done.sbatch_calls += 1
        record_jobs(
            run,
            [JobRecord(submission, job_id, plan.stage, tuple(tuple(t) for t in array), dependency)],
        )
        log.info("%s: job %s, %d task(s)", plan.stage, job_id, n)
    return done
