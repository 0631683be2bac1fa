"""`ubsafe submit` on a real Slurm (the development cluster of `slurm/up`): arrays through submitit,
failures that stay local to their shard, resubmission of what is missing only, requeue and
preemption, kill -9 and relaunch, and arrays split at MaxArraySize.

Every run here uses the demo data and the tiny encoder; results are compared with `ubsafe run`
on this machine, never with numbers written down beforehand.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from slurm_fixtures import (
    MAX_ARRAY_SIZE,
    block_output,
    cluster,  # noqa: F401  (fixture)
    embedding_arrays,
    embedding_files,
    recorded_job_ids,
    sacct_states,
    slurm_up,
    squeue_ids,
    stat_key,
    ubsafe,
    unblock_output,
    wait_for_run,
    wait_until,
)

from ubsafe.rundir import Run

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cluster")]

#: Small tasks on the development cluster (see hpc/local.toml), a short time limit.
SLURM = ("--profile", "local", "--mem", "1", "--time", "20")


@pytest.fixture(scope="module")
def demo_600(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ubsafe.data.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("demo600") / "data", n=600, seed=11)


@pytest.fixture(scope="module")
def reference_600(demo_600: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 600-image demo embedded in shards of 20 by `ubsafe run`, uninterrupted."""
    reference = tmp_path_factory.mktemp("reference600") / "run"
    ubsafe("run", "embed", demo_600, "--out", reference, "--shard-size", 20)
    return reference


def embedding_path(run_dir: Path, shard: int) -> Path:
    from ubsafe.embeddings import shard_file
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


def status_counts(run_dir: Path, stage: str, expect: int) -> dict[str, int]:
    document = json.loads(ubsafe("status", run_dir, "--json", expect=expect).output)
    stages = {s["stage"]: s["counts"] for s in document["stages"]}
    return {k: v for k, v in stages[stage].items() if v}


def latest_jobs(run_dir: Path) -> list[dict[str, object]]:
    lines = (run_dir / "logs" / "slurm" / "jobs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["submission"] == records[-1]["submission"]]


def test_submit_gives_the_same_embeddings_as_run_and_sets_threads_from_cpus(
    demo_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "submitted"
    out = ubsafe(
        "submit", "embed", demo_dir, "--out", run_dir, *SLURM, "--cpus-per-task", 2,
        "--shard-size", 32,
    ).output  # fmt: skip
    # 132 samples in shards of 32: 5 shards; the local profile packs 4 embed shards per task.
    assert re.search(r"embed\s+5 shard\(s\) in 2 task\(s\): job \d+", out), out
    reference = tmp_path / "local"
    ubsafe("run", "embed", demo_dir, "--out", reference, "--shard-size", 32)
    wait_for_run(run_dir)

    assert_same_embeddings(run_dir, reference)
    assert status_counts(run_dir, "embed", expect=0) == {"done": 5}
    (job_id,) = recorded_job_ids(run_dir)
    assert set(sacct_states(job_id).values()) == {"COMPLETED"}
    text = ubsafe("status", run_dir, expect=0).output
    assert f"job {job_id} (embed, 2 task(s), 5 shard(s)): COMPLETED 2" in text
    for shard in range(5):
        log = (run_dir / "logs" / "embed" / f"shard-{shard:05d}.log").read_text()
        assert f"(job {job_id}_" in log  # ran as an array task
        assert "NUMBA_NUM_THREADS=2 OMP_NUM_THREADS=2" in log

    again = ubsafe("submit", "embed", demo_dir, "--out", run_dir, *SLURM, "--shard-size", 32)
    assert "nothing to submit" in again.output
    assert recorded_job_ids(run_dir) == [job_id]


def test_failed_shard_leaves_the_others_done_is_named_and_is_all_a_resubmission_runs(
    demo_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    command = ("submit", "embed", demo_dir, "--out", run_dir, *SLURM, "--shard-size", 32)
    ubsafe("plan", demo_dir, "--out", run_dir, "--shard-size", 32)
    blocked = embedding_path(run_dir, 2)
    block_output(blocked)
    ubsafe(*command, "--shards-per-task", 1)
    wait_for_run(run_dir)

    assert status_counts(run_dir, "embed", expect=1) == {"done": 4, "failed": 1}
    (job_id,) = recorded_job_ids(run_dir)
    states = sacct_states(job_id)
    assert states.pop(f"{job_id}_2") == "FAILED"
    assert set(states.values()) == {"COMPLETED"}
    text = ubsafe("status", run_dir, expect=1).output
    assert "shard 2 failed: builtins.IsADirectoryError: [Errno 21] Is a directory" in text
    assert f"job {job_id}_2 on " in text
    error_file = run_dir / "logs" / "embed" / "shard-00002.error.json"
    slurm_log = run_dir / "logs" / "slurm" / "embed" / f"{job_id}_2_0_log.out"
    assert f"error {error_file}" in text
    assert f"log   {run_dir / 'logs' / 'embed' / 'shard-00002.log'}" in text
    assert f"slurm {slurm_log}" in text
    assert "IsADirectoryError" in slurm_log.read_text()
    assert json.loads(error_file.read_text())["job_id"] == f"{job_id}_2"

    done = {name: stat_key(path) for name, path in embedding_files(run_dir).items()}
    assert len(done) == 4
    unblock_output(blocked)
    out = ubsafe(*command, "--shards-per-task", 1).output
    assert re.search(r"embed\s+1 shard\(s\) in 1 task\(s\)", out), out
    assert [r["tasks"] for r in latest_jobs(run_dir)] == [[[2]]]
    wait_for_run(run_dir)
    assert status_counts(run_dir, "embed", expect=1) == {"done": 5}
    files = embedding_files(run_dir)
    assert {name: stat_key(files[name]) for name in done} == done
    assert not error_file.exists()


def test_a_second_submission_while_jobs_are_queued_is_refused(
    demo_dir: Path, tmp_path: Path
) -> None:
    held = tmp_path / "held.toml"
    held.write_text('partition = "cpu"\nmem_gb = 1\n[additional]\nhold = true\n')
    run_dir = tmp_path / "run"
    command = ("submit", "embed", demo_dir, "--out", run_dir, "--profile", held)
    ubsafe(*command, "--shard-size", 66)
    (job_id,) = recorded_job_ids(run_dir)
    try:
        assert squeue_ids([job_id]) == {job_id}
        refused = ubsafe(*command, "--shard-size", 66, expect=1).output
        assert f"jobs {job_id} of an earlier submission are still queued" in refused
        assert f"scancel {job_id}" in refused
        assert recorded_job_ids(run_dir) == [job_id]
        wait_until(lambda: "PENDING 2" in ubsafe("status", run_dir, expect=1).output, 60, "sacct")
    finally:
        subprocess.run(["scancel", job_id], check=True)


def _task_result(run_dir: Path, stage: str, job_id: str) -> dict[str, list[int]]:
    """The value the task's last attempt returned, read through submitit."""
    import submitit

    job = submitit.SlurmJob(folder=run_dir / "logs" / "slurm" / stage, job_id=job_id)
    result = job.result()
    assert isinstance(result, dict)
    return result


def _shard_log_counts(run_dir: Path, n_shards: int) -> tuple[list[int], list[int]]:
    """Per shard: how many times it started, and how many times it finished."""
    starts, finishes = [], []
    for shard in range(n_shards):
        log = (run_dir / "logs" / "embed" / f"shard-{shard:05d}.log").read_text()
        starts.append(log.count(f"shard {shard} starts"))
        finishes.append(log.count(f"shard {shard} done in"))
    return starts, finishes


def test_scontrol_requeue_of_a_running_task_redoes_only_its_unfinished_shards(
    demo_600: Path, reference_600: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    # One task over 30 shards, encoding one image at a time: it runs long enough to be caught
    # after its first shard, with more work left than Slurm's grace time before it kills it.
    ubsafe(
        "submit", "embed", demo_600, "--out", run_dir, *SLURM, "--shard-size", 20,
        "--shards-per-task", 30, "--batch-size", 1,
    )  # fmt: skip
    (job_id,) = recorded_job_ids(run_dir)
    wait_until(lambda: len(embedding_files(run_dir)) >= 1, 300, "the task's first shard")
    before = {name: stat_key(path) for name, path in embedding_files(run_dir).items()}
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    wait_for_run(run_dir, timeout=900)

    assert_same_embeddings(run_dir, reference_600)
    files = embedding_files(run_dir)
    assert {name: stat_key(files[name]) for name in before} == before
    result = _task_result(run_dir, "embed", job_id)
    # The requeued attempt found the shards of the first attempt on disk and ran the rest.
    assert set(result["skipped"]) >= {int(name[6:11]) for name in before}
    assert result["done"], "the first attempt was stopped before its last shard"
    assert sorted(result["skipped"] + result["done"]) == list(range(30))
    starts, finishes = _shard_log_counts(run_dir, 30)
    assert finishes == [1] * 30, "no shard is encoded twice"
    assert sum(starts) <= 31  # at most the one shard that was cut short started again
    log = (run_dir / "logs" / "slurm" / "embed" / f"{job_id}_0_log.out").read_text()
    assert log.count("Starting with JobEnvironment") == 2  # the task ran twice


def test_preemption_signal_checkpoints_requeues_and_skips_finished_shards(
    demo_600: Path, reference_600: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    ubsafe(
        "submit", "embed", demo_600, "--out", run_dir, *SLURM, "--shard-size", 20,
        "--shards-per-task", 30, "--batch-size", 1,
    )  # fmt: skip
    (job_id,) = recorded_job_ids(run_dir)
    wait_until(lambda: len(embedding_files(run_dir)) >= 2, 300, "two finished shards")
    # What Slurm sends to a preempted job (with preempt_send_user_signal), or before its time
    # limit: submitit's signal, USR2. submitit calls the task's checkpoint() and requeues it.
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    log = run_dir / "logs" / "slurm" / "embed" / f"{job_id}_0_log.out"
    wait_until(lambda: "Calling checkpoint method" in log.read_text(), 120, "the checkpoint")
    before = {name: stat_key(path) for name, path in embedding_files(run_dir).items()}
    wait_for_run(run_dir, timeout=900)

    text = log.read_text()
    assert "this job is preempted" in text and f"Requeued job {job_id}" in text
    assert status_counts(run_dir, "embed", expect=0) == {"done": 30}
    files = embedding_files(run_dir)
    assert {name: stat_key(files[name]) for name in before} == before
    result = _task_result(run_dir, "embed", job_id)
    assert set(result["skipped"]) == {int(name[6:11]) for name in before}
    assert sorted(result["skipped"] + result["done"]) == list(range(30))
    _, finishes = _shard_log_counts(run_dir, 30)
    assert finishes == [1] * 30
    assert_same_embeddings(run_dir, reference_600)
    # The shard the signal caught says so in its log, and the requeued attempt redid it.
    interrupted = [
        s
        for s in range(30)
        if "interrupted (SystemExit)" in (run_dir / "logs/embed" / f"shard-{s:05d}.log").read_text()
    ]
    assert len(interrupted) <= 1 and set(interrupted) <= set(result["done"])


def running_shard(run_dir: Path, at_least: int) -> tuple[int, dict[str, object]] | None:
    """(shard, running marker) of the embed shard in progress, once it is `at_least` or later."""
    for path in (run_dir / "logs" / "embed").glob("shard-*.running"):
        shard = int(path.name[6:11])
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if shard >= at_least:
            return shard, record
    return None


def test_kill_9_mid_shard_then_relaunch_gives_byte_identical_results(
    demo_600: Path, reference_600: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    command = (
        "submit", "embed", demo_600, "--out", run_dir, *SLURM, "--shard-size", 20,
        "--shards-per-task", 30, "--batch-size", 1,
    )  # fmt: skip
    ubsafe(*command)
    shard, record = wait_until(lambda: running_shard(run_dir, at_least=3), 300, "shard 3", 0.02)
    os.kill(int(record["pid"]), signal.SIGKILL)
    wait_for_run(run_dir)

    (job_id,) = recorded_job_ids(run_dir)
    assert set(sacct_states(job_id).values()) == {"FAILED"}
    assert status_counts(run_dir, "embed", expect=1) == {
        "done": shard,
        "interrupted": 1,
        "missing": 29 - shard,
    }
    text = ubsafe("status", run_dir, expect=1).output
    assert f"shard {shard} interrupted: pid {record['pid']}" in text

    out = ubsafe(*command).output
    assert re.search(rf"embed\s+{30 - shard} shard\(s\) in 1 task\(s\)", out), out
    wait_for_run(run_dir)
    assert_same_embeddings(run_dir, reference_600)
    assert not list(run_dir.glob("embeddings/*/*/clean/.ubsafe-tmp-*")), "no partial file left"


def test_dry_run_scripts_are_accepted_by_sbatch(demo_dir: Path, tmp_path: Path) -> None:
    from ubsafe.launch.slurm import cluster_max_array_size

    slurm_up("--max-array-size", str(MAX_ARRAY_SIZE))
    assert cluster_max_array_size() == MAX_ARRAY_SIZE
    out = ubsafe(
        "submit", "effectiveness", demo_dir, "--out", tmp_path / "run", *SLURM,
        "--partition", "gpu", "--gpus-per-task", 1, "--shard-size", 32, "--dry-run",
    ).output  # fmt: skip
    scripts = ["#!/bin/bash" + p.split("\n# --- ")[0] for p in out.split("#!/bin/bash")[1:]]
    assert len(scripts) == 4
    for i, script in enumerate(scripts):
        path = tmp_path / f"script-{i}.sh"
        # The dependency on jobs not yet submitted is a placeholder: test the rest.
        path.write_text(re.sub(r"^#SBATCH --dependency=.*\n", "", script, flags=re.MULTILINE))
        check = subprocess.run(
            ["sbatch", "--test-only", str(path)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr
        assert "to start at" in check.stderr
