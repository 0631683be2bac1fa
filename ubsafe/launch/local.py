"""`ubsafe run`: the pipeline on this machine, stage by stage, missing shards only.

Shards of a stage run in worker processes (at most `workers` at once; spawned, so no CUDA or thread
state is inherited), each through the same `run_task` a Slurm array task uses. A failed shard stops
the
pipeline after its stage, once every other shard of that stage has run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, as_completed

from ubsafe.launch.worker import ShardsFailed, run_task
from ubsafe.progress import progress
from ubsafe.rundir import Run
from ubsafe.stages import Stage, pipeline

log = logging.getLogger(__name__)


def _limit_threads(threads: int) -> None:
    """Runs in each worker process before any heavy import."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("UBSAFE_PROGRESS", "0")


def run_stage(run: Run, stage: Stage, *, workers: int = 1) -> list[int]:
    """Run the stage's missing shards; return the shards that failed."""
    missing = stage.missing(run)
    if not missing:
        log.info("%s: all %d shard(s) already done", stage.name, len(stage.shards(run)))
        return []
    log.info("%s: %d shard(s) to run", stage.name, len(missing))
    if workers <= 1 or len(missing) == 1:
        failed: list[int] = []
        for shard in progress(missing, desc=stage.name, unit="shard"):
            try:
                run_task(str(run.root), stage.name, [shard])
            except ShardsFailed as exc:
                failed += exc.failed
        return failed
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    failed = []
    with ProcessPoolExecutor(
        max_workers=min(workers, len(missing)),
        mp_context=context,
        initializer=_limit_threads,
        initargs=(threads,),
    ) as pool:
        futures: dict[Future[object], int] = {
            pool.submit(run_task, str(run.root), stage.name, [shard]): shard for shard in missing
        }
        for future in progress(
            as_completed(futures), desc=stage.name, total=len(futures), unit="shard"
        ):
            try:
                future.result()
            except ShardsFailed as exc:
                failed += exc.failed
    return sorted(failed)


def run_pipeline(run: Run, target: str, *, workers: int = 1) -> None:
    """Run every stage of `target` this run needs; raise `ShardsFailed` at the first failing one."""
    for stage in pipeline(target):
        if not stage.applies(run):
            continue
        failed = run_stage(run, stage, workers=workers if stage.sharded else 1)
        if failed:
            raise ShardsFailed(stage.name, failed, [run.error_path(stage.name, s) for s in failed])
