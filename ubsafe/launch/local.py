"""`ubsafe run`: the pipeline on this machine, stage by stage, missing shards only.

Shards run through the same `run_task` a Slurm array task uses. With `workers > 1` they run in a
pool of spawned worker processes (no CUDA or thread state inherited) that lives for the whole
pipeline, so each worker imports the libraries and loads a model once, then keeps it.
Each worker gets an equal share of the CPUs for its BLAS and Numba threads. A failed shard stops the
pipeline after its stage, once every other shard of that stage has run.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed

from ubsafe.launch.worker import ShardsFailed, run_task
from ubsafe.logs import configure, progress_line
from ubsafe.progress import progress
from ubsafe.rundir import Run
from ubsafe.stages import Stage, pipeline

log = logging.getLogger(__name__)


def _worker_init(threads: int) -> None:
    """Runs in each worker process before any heavy import (the verbosity comes in the
    environment)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("UBSAFE_PROGRESS", "0")
    configure()


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A pool of `workers` processes for the whole pipeline (None: run in this process)."""
    if workers <= 1:
        yield None
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(threads,),
    ) as pool:
        yield pool


def run_stage(run: Run, stage: Stage, pool: ProcessPoolExecutor | None = None) -> list[int]:
    """Run the stage's missing shards (in `pool` when given); return the shards that failed."""
    missing = stage.missing(run)
    if not missing:
        progress_line("%-8s all %d shard(s) already done", stage.name, len(stage.shards(run)))
        return []
    started = time.perf_counter()
    failed = _run_missing(run, stage, missing, pool)
    seconds = time.perf_counter() - started
    logs = run.root / "logs" / stage.name
    if failed:
        progress_line(
            "%-8s %d of %d shard(s) FAILED %s in %.1f s; errors in %s",
            stage.name,
            len(failed),
            len(missing),
            failed[:10],
            seconds,
            logs,
        )
    else:
        progress_line("%-8s %d shard(s) done in %.1f s", stage.name, len(missing), seconds)
    return failed


def _run_missing(
    run: Run, stage: Stage, missing: list[int], pool: ProcessPoolExecutor | None
) -> list[int]:
    failed: list[int] = []
    if pool is None or len(missing) == 1:
        for shard in progress(missing, desc=stage.name, unit="shard"):
            try:
                run_task(str(run.root), stage.name, [shard])
            except ShardsFailed as exc:
                failed += exc.failed
        return failed
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
    with worker_pool(workers) as pool:
        for stage in pipeline(target):
            if not stage.applies(run):
                continue
            failed = run_stage(run, stage, pool if stage.sharded else None)
            if failed:
                errors = [run.error_path(stage.name, s) for s in failed]
                raise ShardsFailed(stage.name, failed, errors)
