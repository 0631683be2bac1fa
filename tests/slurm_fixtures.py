"""Helpers for the tests of `ubsafe submit`, `ubsafe status` and resume: the development cluster
(`slurm/up`), the `ubsafe` command in-process, and waiting for a run's jobs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[1]
UP = REPO / "slurm" / "up"
MAX_ARRAY_SIZE = 1001


def reason_to_skip_cluster() -> str | None:
    """Why `slurm/up` cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "the development cluster runs on Linux only"
    if shutil.which("dpkg-query") is None and shutil.which("slurmctld") is None:
        return "slurm/up installs Debian packages; this is not Debian and Slurm is not installed"
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        quiet = subprocess.run([sudo, "-n", "true"], capture_output=True) if sudo else None
        if quiet is None or quiet.returncode != 0:
            return "slurm/up starts root daemons: run as root or with passwordless sudo"
    return None


def slurm_up(*options: str) -> None:
    """Bring the cluster up (idempotent); fail the test with slurm/up's output if it fails."""
    result = subprocess.run(
        [str(UP), *options], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"slurm/up {' '.join(options)} failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def cluster() -> None:
    """The development cluster, up with MaxArraySize=1001 (left running after the session)."""
    reason = reason_to_skip_cluster()
    if reason is not None:
        pytest.skip(reason)
    slurm_up("--max-array-size", str(MAX_ARRAY_SIZE))


def ubsafe(*args: Any, expect: int | None = 0) -> Result:
    """Run the `ubsafe` command line in-process; check its exit code unless `expect` is None."""
    from ubsafe.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, (
            f"ubsafe {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
        )
    return result


def wait_until(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.5) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def recorded_job_ids(run_dir: Path) -> list[str]:
    path = run_dir / "logs" / "slurm" / "jobs.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["job_id"] for line in path.read_text().splitlines() if line]


def squeue_ids(job_ids: Sequence[str]) -> set[str]:
    """Array/job ids among `job_ids` that squeue still lists (read independently of ubsafe)."""
    if not job_ids:
        return set()
    out = subprocess.run(
        ["squeue", "-h", "-o", "%F", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def wait_for_run(run_dir: Path, timeout: float = 600) -> None:
    """Wait until no job submitted for the run is queued or running any more."""
    ids = recorded_job_ids(run_dir)
    assert ids, f"no job recorded for {run_dir}"
    wait_until(lambda: not squeue_ids(ids), timeout, f"jobs {ids} of {run_dir}", poll=1.0)


def sacct_states(job_id: str) -> dict[str, str]:
    """{task id: final state} of a job's array tasks, from accounting."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    rows = (line.split("|") for line in out.splitlines() if "|" in line)
    return {jid: state.split()[0] for jid, state in rows}


def embedding_files(run_dir: Path) -> dict[str, Path]:
    """{shard file name: path} of a run's clean embeddings."""
    return {
        p.name: p for p in sorted(run_dir.glob("embeddings/*/*/clean/shard-*.h5")) if p.is_file()
    }


def embedding_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an embedding shard file, read with h5py."""
    import h5py

    with h5py.File(path, "r") as h5:
        return {name: h5[name][...] for name in h5}


def stat_key(path: Path) -> tuple[int, int]:
    """(inode, mtime in ns): changes when a file is rewritten, even atomically."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def block_output(path: Path) -> None:
    """Make the stage's atomic rename onto `path` fail: a non-empty directory stands there."""
    path.mkdir(parents=True)
    (path / "blocked").write_text("a directory where the stage writes its shard file\n")


def unblock_output(path: Path) -> None:
    shutil.rmtree(path)


# --- runs and their outputs ----------------------------------------------------------------------

#: Small tasks on the development cluster (hpc/local.toml), a short time limit.
SLURM = ("--profile", "local", "--mem", "1", "--time", "20")
#: The demo run the tests compare: 132 samples in shards of 8, i.e. 17 shards.
SHARD_SIZE = 8
N_SHARDS = 17


def local_effectiveness(data: Path, out: Path, shard_size: int = SHARD_SIZE) -> Path:
    """`ubsafe run effectiveness` on this machine: the reference a submitted run must equal."""
    ubsafe("run", "effectiveness", data, "--out", out, "--shard-size", shard_size)
    return out


def assert_same_results(run_dir: Path, reference: Path) -> None:
    """results/*.csv and predictions.parquet of both runs are byte-identical."""
    names = sorted(p.name for p in (reference / "results").glob("*.csv"))
    assert "effectiveness.csv" in names
    assert sorted(p.name for p in (run_dir / "results").glob("*.csv")) == names
    for name in [*names, "predictions.parquet"]:
        got = (run_dir / "results" / name).read_bytes()
        assert got == (reference / "results" / name).read_bytes(), name


def embedding_path(run_dir: Path, shard: int) -> Path:
    """Where the embed stage writes a shard of the run's clean embeddings."""
    from ubsafe.embeddings import shard_file
    from ubsafe.rundir import Run
    from ubsafe.stages.embed import cache_key

    run = Run.load(run_dir)
    return shard_file(run, cache_key(run, run.config.encoder), "clean", shard)


def assert_same_embeddings(run_dir: Path, reference: Path) -> None:
    """Both runs hold the same shard files with identical arrays (sample ids, embeddings, ...)."""
    want = embedding_files(reference)
    got = embedding_files(run_dir)
    assert sorted(got) == sorted(want) and want
    for name, path in want.items():
        expected = embedding_arrays(path)
        actual = embedding_arrays(got[name])
        assert expected.keys() == actual.keys()
        for key in expected:
            assert expected[key].dtype == actual[key].dtype, (name, key)
            if expected[key].dtype == object:  # strings
                assert expected[key].tolist() == actual[key].tolist(), (name, key)
            else:
                assert expected[key].tobytes() == actual[key].tobytes(), (name, key)


def status_document(run_dir: Path, expect: int) -> dict[str, Any]:
    return dict(json.loads(ubsafe("status", run_dir, "--json", expect=expect).output))


def status_counts(run_dir: Path, stage: str, expect: int) -> dict[str, int]:
    """{state: shards} of one stage in `ubsafe status --json`, zero counts left out."""
    stages = {s["stage"]: s["counts"] for s in status_document(run_dir, expect)["stages"]}
    return {k: v for k, v in stages[stage].items() if v}


def latest_jobs(run_dir: Path) -> list[dict[str, Any]]:
    """The job records of the run's most recent submission."""
    lines = (run_dir / "logs" / "slurm" / "jobs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["submission"] == records[-1]["submission"]]


def running_shard(run_dir: Path, stage: str, at_least: int) -> tuple[int, dict[str, Any]] | None:
    """(shard, running marker) of the stage's shard in progress, once it is `at_least` or later."""
    for path in (run_dir / "logs" / stage).glob("shard-*.running"):
        shard = int(path.name[6:11])
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if shard >= at_least:
            return shard, record
    return None


def task_result(run_dir: Path, stage: str, job_id: str) -> dict[str, Any]:
    """The value a task's last attempt returned, read through submitit."""
    import submitit

    job = submitit.SlurmJob(folder=run_dir / "logs" / "slurm" / stage, job_id=job_id)
    result = job.result()
    assert isinstance(result, dict)
    return result


def shard_log_counts(run_dir: Path, stage: str, n_shards: int) -> tuple[list[int], list[int]]:
    """Per shard: how many times it started, and how many times it finished."""
    starts, finishes = [], []
    for shard in range(n_shards):
        log = (run_dir / "logs" / stage / f"shard-{shard:05d}.log").read_text()
        starts.append(log.count(f"shard {shard} starts"))
        finishes.append(log.count(f"shard {shard} done in"))
    return starts, finishes
