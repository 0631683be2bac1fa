"""The one function every executor runs: `run_task(run_dir, stage, shards)`.

It receives only the run directory, the stage name and shard indices; the config is reloaded from
`run.toml`. Each shard is re-checked on disk first (another task may have finished it), logs to its
own file, and on failure writes `error.json` beside the log instead of sinking the other shards.

Also a command line for plain sbatch scripts: `python -m ubsafe.launch.worker RUN STAGE SHARD...`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ubsafe import atomic
from ubsafe.logs import LOG_FORMAT, configure, verbosity
from ubsafe.redact import RedactingFormatter, redact
from ubsafe.rundir import Run
from ubsafe.stages import STAGES

log = logging.getLogger("ubsafe")


class ShardsFailed(RuntimeError):
    """Some shards of a task failed; each has its error.json (the others completed)."""

    def __init__(self, stage: str, failed: list[int], errors: list[Path]):
        self.stage = stage
        self.failed = failed
        self.errors = errors
        listing = ", ".join(str(p) for p in errors[:5])
        super().__init__(
            f"stage {stage}: {len(failed)} shard(s) failed {failed[:20]}; see {listing}"
        )

    def __reduce__(self) -> tuple[type[ShardsFailed], tuple[str, list[int], list[Path]]]:
        # Crosses process boundaries (submitit result files, process pools) intact.
        return (type(self), (self.stage, self.failed, self.errors))


@dataclass
class TaskResult:
    stage: str
    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    seconds: float = 0.0


def job_id() -> str | None:
    """The scheduler's id of this task, when there is one."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


@contextlib.contextmanager
def shard_log(path: Path) -> Iterator[logging.Handler]:
    """Send every record of this process (ubsafe's and libraries') to the shard's own log file
    for the duration; the terminal shows only what `ubsafe.logs` lets through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    handler.setLevel(logging.DEBUG if verbosity() >= 2 else logging.INFO)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def thread_settings() -> str:
    """The thread counts this process was started with (`NUMBA_NUM_THREADS=4 ...`); an unset
    variable means the library's default, every core."""
    names = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")
    cores = f"unset (all {os.cpu_count()} cores)"
    return " ".join(f"{name}={os.environ.get(name) or cores}" for name in names)


def running_path(run: Run, stage: str, shard: int) -> Path:
    return run.log_path(stage, shard).with_suffix(".running")


@contextlib.contextmanager
def running_marker(run: Run, stage: str, shard: int) -> Iterator[None]:
    """Mark the shard as in progress (host, pid, job id) until this process is done with it.

    A process killed with -9 leaves the marker behind; `ubsafe status` then sees a dead pid (same
    host) or a finished job and reports the shard as interrupted, not running.
    """
    path = running_path(run, stage, shard)
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_id": job_id(),
        "started": time.time(),
    }
    atomic.write_text(path, json.dumps(record) + "\n")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_error(run: Run, stage: str, shard: int, exc: BaseException) -> Path:
    path = run.error_path(stage, shard)
    record = {
        "stage": stage,
        "shard": shard,
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": redact(str(exc)),
        "traceback": redact("".join(traceback.format_exception(exc))),
        "job_id": job_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "log": str(run.log_path(stage, shard)),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config_hash": run.config.config_hash(),
    }
    atomic.write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def prepare_kernels(run: Run, stage: str) -> None:
    """Point numba's cache where tasks can share it; warm it once if the stage runs kernels."""
    from ubsafe.kernels import cache

    if STAGES[stage].needs.kernels:
        cache.warm_once(run)
    else:
        cache.configure(run)


def run_task(run_dir: str, stage: str, shards: Sequence[int]) -> TaskResult:
    """Run `stage` on each of `shards` that is not done yet. Raise `ShardsFailed` if any failed."""
    from ubsafe import weights

    run = Run.load(run_dir)
    if not run.config.verify_weights:
        weights.configure(verify=False)
    spec = STAGES[stage]
    result = TaskResult(stage)
    start = time.perf_counter()
    kernels_ready = False
    for shard in shards:
        if spec.is_done(run, shard):
            result.skipped.append(shard)
            continue
        if not kernels_ready:
            prepare_kernels(run, stage)
            kernels_ready = True
        error = run.error_path(stage, shard)
        with shard_log(run.log_path(stage, shard)), running_marker(run, stage, shard):
            log.info(
                "stage %s shard %d starts (%s, host %s, threads %s)",
                stage,
                shard,
                f"job {job_id()}" if job_id() else "local",
                socket.gethostname(),
                thread_settings(),
            )
            t0 = time.perf_counter()
            try:
                spec.run_shard(run, shard)
            except Exception as exc:
                log.exception("stage %s shard %d failed", stage, shard)
                write_error(run, stage, shard, exc)
                result.failed.append(shard)
                continue
            except BaseException as exc:
                # Preemption/time limit (submitit exits to requeue), Ctrl-C: not the shard's fault;
                # nothing final was written, and a relaunch or the requeued task redoes it.
                log.warning("stage %s shard %d interrupted (%s)", stage, shard, type(exc).__name__)
                raise
            with contextlib.suppress(FileNotFoundError):
                error.unlink()
            log.info("stage %s shard %d done in %.1f s", stage, shard, time.perf_counter() - t0)
            result.done.append(shard)
    result.seconds = time.perf_counter() - start
    if result.failed:
        raise ShardsFailed(stage, result.failed, [run.error_path(stage, s) for s in result.failed])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3:
        print(
            "usage: python -m ubsafe.launch.worker RUN_DIR STAGE SHARD [SHARD ...]", file=sys.stderr
        )
        return 2
    configure(max(verbosity(), 1))
    run_dir, stage, *shards = args
    try:
        result = run_task(run_dir, stage, [int(s) for s in shards])
    except ShardsFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"stage {stage}: done {result.done}, already done {result.skipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
