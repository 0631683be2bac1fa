"""The development cluster that `slurm/up` starts is a real Slurm: it schedules, runs,
accounts and limits jobs as a university cluster does, and the plain sbatch templates
work on it.

The session fixture calls `slurm/up` itself (installing Debian packages if needed);
it needs root or passwordless sudo, and skips otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
UP = REPO / "slurm" / "up"
SUBMIT_STAGE = REPO / "slurm" / "submit-stage"
STAGE_TEMPLATE = REPO / "slurm" / "templates" / "stage-array.sbatch"
STATE_DIR = Path(os.environ.get("UBSAFE_SLURM_STATE", "/var/lib/ubsafe-slurm"))
MAX_ARRAY_SIZE = 1001
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")


def run(
    args: Sequence[str | Path],
    timeout: float = 60,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command and capture its text output; never raises on a non-zero exit."""
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=env,
    )


def up(*options: str) -> subprocess.CompletedProcess[str]:
    """Call slurm/up and fail the test with its output when it fails."""
    result = run([UP, *options], timeout=900)
    if result.returncode != 0:
        pytest.fail(f"slurm/up {' '.join(options)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def reason_to_skip() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the development cluster runs on Linux only"
    if shutil.which("dpkg-query") is None and shutil.which("slurmctld") is None:
        return "slurm/up installs Debian packages; this is not Debian and Slurm is not installed"
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None or run([sudo, "-n", "true"]).returncode != 0:
            return "slurm/up starts root daemons: run as root or with passwordless sudo"
    return None


@pytest.fixture(scope="session")
def cluster() -> None:
    """The cluster, up with MaxArraySize=1001 (it stays up after the session)."""
    reason = reason_to_skip()
    if reason is not None:
        pytest.skip(reason)
    up("--max-array-size", str(MAX_ARRAY_SIZE))


def submit(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """sbatch --parsable; returns the job id."""
    result = run(["sbatch", "--parsable", *args], cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def wait_until_gone(job_ids: Sequence[str], timeout: float = 120) -> None:
    """Wait until squeue no longer lists any of the jobs."""
    deadline = time.monotonic() + timeout
    while run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i"]).stdout.strip():
        assert time.monotonic() < deadline, f"jobs {job_ids} still queued after {timeout}s"
        time.sleep(0.3)


def sacct_rows(job_id: str, expected: int, timeout: float = 30) -> dict[str, tuple[str, str]]:
    """{JobID: (State, ExitCode)} of a job's allocations (array tasks included), read from
    accounting once `expected` rows have all reached a final state."""
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
    deadline = time.monotonic() + timeout
    while True:
        out = run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode"]).stdout
        rows = {}
        for line in out.splitlines():
            jid, state, exit_code = line.split("|")
            rows[jid] = (state.split()[0], exit_code)
        if len(rows) >= expected and all(state in final for state, _ in rows.values()):
            return rows
        assert time.monotonic() < deadline, f"sacct for job {job_id} after {timeout}s: {rows}"
        time.sleep(0.3)


def show_config(key: str) -> str:
    out = run(["scontrol", "show", "config"]).stdout
    match = re.search(rf"^{key}\s*=\s*(\S+)", out, re.MULTILINE)
    assert match, f"{key} missing from scontrol show config"
    return match.group(1)


def array_is_accepted(spec: str, cwd: Path) -> bool:
    """Whether Slurm accepts --array=spec; an accepted job is cancelled before it runs."""
    result = run(["sbatch", "--parsable", "--hold", f"--array={spec}", "--wrap", "true"], cwd=cwd)
    if result.returncode == 0:
        run(["scancel", result.stdout.strip().split(";")[0]])
        return True
    assert "Invalid job array specification" in result.stderr, result.stderr
    return False


def started_pids() -> dict[str, str]:
    return {
        d: (STATE_DIR / "started" / f"{d}.pid").read_text().strip()
        for d in DAEMONS
        if (STATE_DIR / "started" / f"{d}.pid").exists()
    }


def test_node_is_idle_in_cpu_and_gpu_partitions_with_this_machines_cpus(cluster: None) -> None:
    out = run(["sinfo", "-h", "-N", "-o", "%P|%T|%c|%m"]).stdout.split()
    rows = {fields[0]: fields[1:] for fields in (line.split("|") for line in out)}
    assert set(rows) == {"cpu*", "gpu"}  # '*' marks the default partition
    mem_total_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    for state, cpus, memory in rows.values():
        assert state in {"idle", "mixed", "allocated"}
        assert int(cpus) == os.cpu_count()
        assert 0 < int(memory) < mem_total_mb


def test_wrap_job_runs_and_sacct_reports_completed(cluster: None, tmp_path: Path) -> None:
    result = run(
        [
            "sbatch",
            "--wait",
            "--parsable",
            "-o",
            "out-%j.txt",
            "--wrap",
            'echo "job $SLURM_JOB_ID in $SLURM_JOB_PARTITION"',
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    assert (tmp_path / f"out-{job_id}.txt").read_text() == f"job {job_id} in cpu\n"
    assert sacct_rows(job_id, 1) == {job_id: ("COMPLETED", "0:0")}


def test_failing_job_exit_code_reaches_sbatch_and_sacct(cluster: None, tmp_path: Path) -> None:
    result = run(
        ["sbatch", "--wait", "--parsable", "-o", "/dev/null", "--wrap", "exit 3"],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 3
    job_id = result.stdout.strip().split(";")[0]
    assert sacct_rows(job_id, 1) == {job_id: ("FAILED", "3:0")}


def test_three_task_array_runs_every_index(cluster: None, tmp_path: Path) -> None:
    job_id = submit(
        "--array=0-2",
        "-o",
        "/dev/null",
        "--wrap",
        'echo "$SLURM_ARRAY_JOB_ID" > task-$SLURM_ARRAY_TASK_ID.txt',
        cwd=tmp_path,
    )
    wait_until_gone([job_id])
    assert sorted(p.name for p in tmp_path.glob("task-*.txt")) == [
        f"task-{i}.txt" for i in range(3)
    ]
    assert {p.read_text().strip() for p in tmp_path.glob("task-*.txt")} == {job_id}
    assert sacct_rows(job_id, 3) == {f"{job_id}_{i}": ("COMPLETED", "0:0") for i in range(3)}


def test_max_array_size_is_the_one_up_was_given(cluster: None, tmp_path: Path) -> None:
    assert show_config("MaxArraySize") == str(MAX_ARRAY_SIZE)
    assert array_is_accepted(str(MAX_ARRAY_SIZE - 1), tmp_path)
    assert not array_is_accepted(str(MAX_ARRAY_SIZE), tmp_path)


def test_gpu_partition_hands_out_its_gpus_and_refuses_more(cluster: None, tmp_path: Path) -> None:
    gres = run(["sinfo", "-h", "-p", "gpu", "-o", "%G"]).stdout.strip()
    match = re.fullmatch(r"gpu:(\d+)", gres)
    assert match, f"gpu partition has no GPUs: {gres!r}"
    gpus = int(match.group(1))
    job_id = submit(
        "-p",
        "gpu",
        "-n",
        "1",
        "--gpus-per-task=1",
        "-o",
        "out.txt",
        "--wrap",
        'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"',
        cwd=tmp_path,
    )
    wait_until_gone([job_id])
    assert re.fullmatch(r"CUDA_VISIBLE_DEVICES=\d+\n", (tmp_path / "out.txt").read_text())
    assert sacct_rows(job_id, 1)[job_id][0] == "COMPLETED"
    alloc = run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "AllocTRES"]).stdout
    assert "gres/gpu=1" in alloc
    refused = run(["sbatch", "-p", "gpu", f"--gpus={gpus + 1}", "--wrap", "true"], cwd=tmp_path)
    assert refused.returncode != 0
    assert "Requested node configuration is not available" in refused.stderr


def test_up_again_restarts_nothing_and_running_jobs_finish(cluster: None, tmp_path: Path) -> None:
    before = started_pids()
    job_id = submit("-o", "/dev/null", "--wrap", "sleep 3", cwd=tmp_path)
    up("--max-array-size", str(MAX_ARRAY_SIZE))
    assert started_pids() == before
    wait_until_gone([job_id])
    assert sacct_rows(job_id, 1)[job_id] == ("COMPLETED", "0:0")


def test_up_refuses_to_overwrite_a_slurm_conf_it_did_not_write(
    cluster: None, tmp_path: Path
) -> None:
    theirs = tmp_path / "slurm.conf"
    theirs.write_text("ClusterName=theirs\n")
    result = run([UP], env={**os.environ, "SLURM_CONF": str(theirs)}, timeout=120)
    assert result.returncode != 0
    assert str(theirs) in result.stderr
    assert theirs.read_text() == "ClusterName=theirs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm.conf"]


# --- plain sbatch templates, running the real worker on a real run ----------------------


def job_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment the array tasks inherit: this checkout's ubsafe and interpreter."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "UBSAFE_PYTHON": sys.executable,
        "UBSAFE_PROGRESS": "0",
        "HOME": str(tmp_path),
        **extra,
    }


def ubsafe_cli(*args: str | Path, env: dict[str, str]) -> None:
    result = run([sys.executable, "-m", "ubsafe", *args], timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def task_of(run_dir: Path, stage: str, shard: int) -> list[str]:
    """The scheduler ids (`<array>_<task>`) of every start of a shard, read from its log."""
    log = (run_dir / "logs" / stage / f"shard-{shard:05d}.log").read_text(encoding="utf-8")
    return re.findall(rf"stage {stage} shard {shard} starts \(job (\S+),", log)


@pytest.fixture
def scored_run(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A finished effectiveness run (tiny encoder, a probe) whose score shards and results were
    removed: the arrays below redo them with the real worker, the reducer reduces for real."""
    from ubsafe.data.demo import write_demo

    data = write_demo(tmp_path / "data", n=44, seed=5)
    run_dir = tmp_path / "run"
    env = job_env(tmp_path)
    ubsafe_cli(
        "run",
        "effectiveness",
        data,
        "--out",
        run_dir,
        "--encoder",
        "tiny",
        "--classifiers",
        "probe-all",
        "--shard-size",
        "7",
        "--bootstrap",
        "200",
        env=env,
    )
    shards = len(list((run_dir / "shards" / "score").glob("shard-*.parquet")))
    for path in (run_dir / "shards" / "score").glob("shard-*"):
        path.unlink()
    shutil.rmtree(run_dir / "results")
    shutil.rmtree(run_dir / "logs" / "score")
    yield run_dir, shards


@pytest.mark.slow
def test_max_array_size_change_splits_stage_arrays(
    cluster: None, tmp_path: Path, scored_run: tuple[Path, int]
) -> None:
    from ubsafe.rundir import Run
    from ubsafe.stages import STAGES

    run_dir, shards = scored_run
    max_array, per_task = 3, 2
    assert shards == 7
    running = submit("-o", "/dev/null", "--wrap", "sleep 5", cwd=tmp_path)
    try:
        up("--max-array-size", str(max_array))  # restarts slurmctld and slurmd
        assert show_config("MaxArraySize") == str(max_array)
        assert array_is_accepted(f"0-{max_array - 1}", tmp_path)
        assert not array_is_accepted(f"0-{max_array}", tmp_path)

        result = run(
            [
                SUBMIT_STAGE,
                "--shards-per-task",
                str(per_task),
                "--reduce",
                run_dir,
                "score",
                str(shards),
            ],
            cwd=tmp_path,
            env=job_env(tmp_path),
        )
        assert result.returncode == 0, result.stderr
        arrays_line, reducer = result.stdout.split()
        arrays = arrays_line.split(":")
        tasks = -(-shards // per_task)
        assert len(arrays) == -(-tasks // max_array)  # 4 tasks in arrays of 3 and 1
        wait_until_gone([*arrays, reducer], timeout=900)

        the_run = Run.load(run_dir)
        for shard in range(shards):
            task = shard // per_task
            assert STAGES["score"].is_done(the_run, shard)
            assert task_of(run_dir, "score", shard) == [
                f"{arrays[task // max_array]}_{task % max_array}"
            ]
        assert (run_dir / "results" / "effectiveness.csv").is_file()  # the real reduce ran
        assert sacct_rows(running, 1)[running] == ("COMPLETED", "0:0")
        for index, array in enumerate(arrays):
            n = min(max_array, tasks - index * max_array)
            assert sacct_rows(array, n) == {f"{array}_{i}": ("COMPLETED", "0:0") for i in range(n)}
        assert sacct_rows(reducer, 1) == {reducer: ("COMPLETED", "0:0")}
    finally:
        up("--max-array-size", str(MAX_ARRAY_SIZE))
    assert show_config("MaxArraySize") == str(MAX_ARRAY_SIZE)


@pytest.mark.slow
def test_stage_task_requeues_itself_on_the_time_limit_warning(
    cluster: None, tmp_path: Path
) -> None:
    """The real worker, paused at a known point inside its shard's write (the first attempt
    only), is requeued by the time-limit warning; the second attempt redoes the shard."""
    from ubsafe.atomic import PAUSE_ENV
    from ubsafe.data.demo import write_demo
    from ubsafe.rundir import Run
    from ubsafe.stages import STAGES

    data = write_demo(tmp_path / "data", n=22, seed=5)
    run_dir = tmp_path / "run"
    ubsafe_cli(
        "plan",
        data,
        "--out",
        run_dir,
        "--encoder",
        "tiny",
        "--classifiers",
        "probe-all",
        env=job_env(tmp_path),
    )
    marker = tmp_path / "paused"
    env = job_env(tmp_path, **{PAUSE_ENV: f"shard-00000.h5:{marker}"})
    job_id = submit(
        "--array=0",
        "-o",
        str(tmp_path / "task.out"),
        STAGE_TEMPLATE,
        run_dir,
        "embed",
        "1",
        cwd=tmp_path,
        env=env,
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert time.monotonic() < deadline, "the first attempt never reached its write"
        time.sleep(0.3)
    the_run = Run.load(run_dir)
    assert not STAGES["embed"].is_done(the_run, 0)
    # What Slurm sends two minutes before the time limit (#SBATCH --signal=B:USR1@120).
    assert run(["scancel", "--batch", "--signal=USR1", f"{job_id}_0"]).returncode == 0
    wait_until_gone([job_id], timeout=600)
    assert STAGES["embed"].is_done(the_run, 0)
    assert task_of(run_dir, "embed", 0) == [f"{job_id}_0", f"{job_id}_0"]  # two attempts
    states = run(
        ["sacct", "-X", "-n", "-P", "-D", "-j", f"{job_id}_0", "-o", "State"]
    ).stdout.split()
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED"
