"""Submission overhead of `ubsafe submit` for a stage of many shards, on the Slurm of this machine.

    python bench/bench_submit.py [--shards 5000] [--baseline-shards 5000]

Plans a synthetic dataset of one image per shard, then submits the `embed` stage (held, so that
nothing runs; every job is cancelled afterwards) and counts sbatch calls and seconds for:
- ubsafe, dry run (plans the arrays and writes the sbatch scripts, submits nothing);
- ubsafe, automatic packing (at most 1000 array tasks per stage);
- ubsafe, one shard per task (arrays split at MaxArraySize);
against baselines measured in the same run:
- one `sbatch` per shard (the plain way, `sbatch --hold --wrap true`, the cheapest call there is);
- submitit's `map_array` over every shard in one array, as submitit does it (no split).
Needs the cluster up (`slurm/up`) and permission to submit to its `cpu` partition.
"""

from __future__ import annotations

import argparse
import functools
import io
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ubsafe.taxonomy import CATEGORIES

PARTITION = "cpu"


def write_dataset(root: Path, n: int) -> Path:
    """`n` tiny PNGs in UnsafeBench's Parquet layout, all categories, both labels and sources."""
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    for split, rows in (("train", range(0, n, 2)), ("test", range(1, n, 2))):
        images = []
        for i in rows:
            buffer = io.BytesIO()
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(buffer, "PNG")
            images.append({"bytes": buffer.getvalue(), "path": f"{i}.png"})
        table = pa.table(
            {
                "image": pa.array(
                    images, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])
                ),
                "safety_label": [("Safe", "Unsafe")[(i // 2) % 2] for i in rows],
                "category": [CATEGORIES[(i // 4) % len(CATEGORIES)] for i in rows],
                "source": [("Laion5B", "Lexica")[(i // 8) % 2] for i in rows],
                "text": ["" for _ in rows],
            }
        )
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def plan_run(dataset: Path, out: Path) -> Any:
    from ubsafe.cli.pipeline import prepare, resolve_config

    config = resolve_config(
        dataset, out, "embed", {"shard_size": 1, "encoder": "tiny", "classifiers": "nudenet"}
    )
    return prepare(config)


def held_profile() -> Any:
    from ubsafe.launch.profiles import parse_profile

    table = {
        "partition": PARTITION,
        "cpus_per_task": 1,
        "mem_gb": 0.5,
        "time_min": 10,
        "additional": {"hold": True},
    }
    return parse_profile(table, "bench", origin="bench profile")


def cancel(job_ids: list[str]) -> None:
    for start in range(0, len(job_ids), 500):
        subprocess.run(["scancel", *job_ids[start : start + 500]], check=False)


def timed(
    action: Callable[[], tuple[int, list[str]] | None],
) -> tuple[float, int | None, list[str]]:
    """Seconds, sbatch calls (None: refused) and job ids of one submission."""
    start = time.perf_counter()
    outcome = action()
    seconds = time.perf_counter() - start
    return (seconds, None, []) if outcome is None else (seconds, *outcome)


def ubsafe_submit(run: Any, dry_run: bool, per_task: int | None) -> tuple[int, list[str]]:
    from ubsafe.launch.slurm import submit

    flags = {"shards_per_task": per_task}
    submitted = submit(run, "embed", held_profile(), flags, dry_run=dry_run)
    return sum(s.sbatch_calls for s in submitted), [j for s in submitted for j in s.job_ids]


def sbatch_per_shard(n: int, folder: Path) -> tuple[int, list[str]]:
    job_ids = []
    for shard in range(n):
        command = ["sbatch", "--parsable", "--hold", f"--partition={PARTITION}", "--mem=512M"]
        command += [f"--output={folder}/%j.out", f"--job-name=bench-{shard}", "--wrap", "true"]
        out = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
        )
        job_ids.append(out.stdout.strip().split(";")[0])
    return n, job_ids


def submitit_unsplit(n: int, folder: Path) -> tuple[int, list[str]] | None:
    """submitit's own array of `n` tasks; None when sbatch refuses it (beyond MaxArraySize)."""
    import submitit
    from submitit.core.utils import FailedJobError

    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(
        partition=PARTITION, mem="512MB", time=10, additional_parameters={"hold": True}
    )
    try:
        jobs = executor.map_array(print, range(n))
    except FailedJobError as exc:
        print(f"submitit map_array of {n} tasks refused: {str(exc).strip()}")
        return None
    return 1, [str(jobs[0].job_id).split("_")[0]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=5000)
    parser.add_argument("--baseline-shards", type=int, default=None, help="default: --shards")
    args = parser.parse_args()
    n = args.shards
    n_base = args.baseline_shards or n
    from ubsafe.launch.slurm import cluster_max_array_size

    print(f"cluster MaxArraySize {cluster_max_array_size()}; {n} shards of one image each")
    rows: list[tuple[str, float, int | None]] = []
    with tempfile.TemporaryDirectory(prefix="ubsafe-bench-") as scratch:
        root = Path(scratch)
        t0 = time.perf_counter()
        run = plan_run(write_dataset(root / "data", n), root / "run")
        print(f"dataset and plan: {time.perf_counter() - t0:.1f} s (not counted below)")

        for label, dry, per_task in (
            ("ubsafe submit --dry-run", True, None),
            ("ubsafe submit (automatic packing)", False, None),
            ("ubsafe submit --shards-per-task 1", False, 1),
        ):
            seconds, calls, ids = timed(functools.partial(ubsafe_submit, run, dry, per_task))
            cancel(ids)
            # The next submission of the same run must not see these jobs as queued.
            (run.root / "logs" / "slurm" / "jobs.jsonl").unlink(missing_ok=True)
            rows.append((label, seconds, calls))

        folder = root / "baseline"
        folder.mkdir()
        seconds, calls, ids = timed(functools.partial(sbatch_per_shard, n_base, folder))
        cancel(ids)
        baseline = seconds * n / n_base  # per-shard cost times the shards, if a subset was timed
        rows.append((f"baseline: one sbatch per shard ({n_base} timed)", baseline, n))
        seconds, calls, ids = timed(functools.partial(submitit_unsplit, n, root / "submitit"))
        cancel(ids)
        rows.append(("baseline: submitit map_array, unsplit", seconds, calls))

    print(f"\n{'submission of ' + str(n) + ' shards':<48} {'sbatch':>7} {'seconds':>8}  ratio")
    for label, seconds, calls in rows:
        if calls is None:
            print(f"{label:<48} {'-':>7} {seconds:>8.2f}  refused by Slurm")
            continue
        ratio = baseline / seconds
        print(f"{label:<48} {calls:>7} {seconds:>8.2f}  {ratio:.1f}x less time than one per shard")
    return 0


if __name__ == "__main__":
    sys.exit(main())
