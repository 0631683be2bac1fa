"""`ubsafe submit` on a real Slurm (the development cluster of `slurm/up`): the same results as
`ubsafe run`, a failure that stays with its shard and a resubmission of that shard only, no second
submission while jobs are queued, `scontrol requeue`, and sbatch scripts that Slurm accepts.

Every run uses the demo data and the tiny encoder; results are compared with `ubsafe run` on this
machine, never with numbers written down beforehand. The slower scenarios (kill -9, preemption,
a failing shard through the whole effectiveness chain) are in test_resume_slurm.py.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest
from slurm_fixtures import (
    MAX_ARRAY_SIZE,
    N_SHARDS,
    SHARD_SIZE,
    SLURM,
    assert_same_embeddings,
    assert_same_results,
    block_output,
    cluster,  # noqa: F401  (fixture)
    embedding_files,
    embedding_path,
    latest_jobs,
    local_effectiveness,
    recorded_job_ids,
    sacct_states,
    shard_log_counts,
    slurm_up,
    squeue_ids,
    stat_key,
    status_counts,
    status_document,
    task_result,
    ubsafe,
    unblock_output,
    wait_for_run,
    wait_until,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cluster")]


@pytest.fixture(scope="module")
def reference(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's effectiveness results from `ubsafe run` on this machine."""
    return local_effectiveness(demo_dir, tmp_path_factory.mktemp("local") / "run")


def test_submit_effectiveness_gives_the_results_of_run(
    demo_dir: Path, reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "submitted"
    out = ubsafe(
        "submit", "effectiveness", demo_dir, "--out", run_dir, *SLURM, "--cpus-per-task", 2,
        "--shards-per-task", 6, "--shard-size", SHARD_SIZE,
    ).output  # fmt: skip
    # 17 shards, 6 per task: three tasks for each sharded stage, one for each other stage.
    for stage, shards, tasks in (
        ("embed", N_SHARDS, 3),
        ("fit", 1, 1),
        ("score", N_SHARDS, 3),
        ("reduce", 1, 1),
        ("report", 1, 1),
    ):
        assert re.search(rf"{stage}\s+{shards} shard\(s\) in {tasks} task\(s\): job \d+\n", out)
    wait_for_run(run_dir)

    assert_same_results(run_dir, reference)
    assert (run_dir / "report" / "index.html").is_file()
    document = status_document(run_dir, expect=0)
    assert [s["stage"] for s in document["stages"]] == ["embed", "fit", "score", "reduce", "report"]
    jobs = {j["stage"]: j for j in latest_jobs(run_dir)}
    chain = ["embed", "fit", "score", "reduce", "report"]
    for before, after in itertools.pairwise(chain):
        kind = "afterok" if after == "report" else "afterany"
        assert jobs[after]["dependency"] == f"{kind}:{jobs[before]['job_id']}"
        assert set(sacct_states(jobs[before]["job_id"]).values()) == {"COMPLETED"}
    for stage in ("embed", "score"):
        for shard in range(N_SHARDS):
            log = (run_dir / "logs" / stage / f"shard-{shard:05d}.log").read_text()
            assert f"(job {jobs[stage]['job_id']}_{shard // 6}, " in log  # its array task
            assert "NUMBA_NUM_THREADS=2 OMP_NUM_THREADS=2" in log

    again = ubsafe(
        "submit", "effectiveness", demo_dir, "--out", run_dir, *SLURM, "--shard-size", SHARD_SIZE
    )
    assert "nothing to submit" in again.output
    assert len(recorded_job_ids(run_dir)) == 5


def test_a_failed_shard_leaves_the_others_done_and_a_resubmission_runs_only_it(
    demo_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    command = ("submit", "embed", demo_dir, "--out", run_dir, *SLURM, "--shard-size", 32)
    ubsafe("plan", demo_dir, "--out", run_dir, "--shard-size", 32)  # 5 shards
    blocked = embedding_path(run_dir, 2)
    block_output(blocked)  # the stage's own rename onto it fails
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

    done = {name: stat_key(path) for name, path in embedding_files(run_dir).items()}
    assert len(done) == 4
    unblock_output(blocked)
    out = ubsafe(*command, "--shards-per-task", 1).output
    assert re.search(r"embed\s+1 shard\(s\) in 1 task\(s\): job \d+\n", out), out
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
    held.write_text('partition = "cpu"\ncpus_per_task = 1\nmem_gb = 1\n[additional]\nhold = true\n')
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
        # A marker left by a worker on another node cannot be checked by pid from here:
        # Slurm's view of its task decides between running and interrupted.
        marker = run_dir / "logs" / "embed" / "shard-00001.running"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(
            json.dumps({"host": "node-elsewhere", "pid": 1, "job_id": f"{job_id}_1", "started": 0})
        )
        assert status_counts(run_dir, "embed", expect=1) == {"running": 1, "missing": 1}
    finally:
        subprocess.run(["scancel", job_id], check=True)
    wait_until(lambda: not squeue_ids([job_id]), 60, "the cancelled job to leave the queue")
    assert status_counts(run_dir, "embed", expect=1) == {"interrupted": 1, "missing": 1}


@pytest.fixture(scope="module")
def demo_600(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ubsafe.data.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("demo600") / "data", n=600, seed=11)


def test_scontrol_requeue_of_a_running_task_redoes_only_its_unfinished_shards(
    demo_600: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ubsafe.atomic import PAUSE_ENV

    run_dir = tmp_path / "run"
    # One task over 30 shards; its first attempt stops for good half-way through writing shard 3
    # (the test hook of `ubsafe.atomic`; sbatch passes the environment on), so the requeue
    # always lands on a running task with shards done and shards left.
    marker = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_ENV, f"shard-00003.h5:{marker}")
    ubsafe(
        "submit", "embed", demo_600, "--out", run_dir, *SLURM, "--shard-size", 20,
        "--shards-per-task", 30,
    )  # fmt: skip
    (job_id,) = recorded_job_ids(run_dir)
    wait_until(marker.exists, 300, "the task's pause inside shard 3")
    before = {name: stat_key(path) for name, path in embedding_files(run_dir).items()}
    assert sorted(before) == [f"shard-{i:05d}.h5" for i in range(3)]
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    wait_for_run(run_dir, timeout=900)

    reference = tmp_path / "local"
    ubsafe("run", "embed", demo_600, "--out", reference, "--shard-size", 20)
    assert_same_embeddings(run_dir, reference)
    files = embedding_files(run_dir)
    assert {name: stat_key(files[name]) for name in before} == before
    result = task_result(run_dir, "embed", job_id)
    # The requeued attempt found the first attempt's shards on disk and ran the rest.
    assert set(result["skipped"]) >= {int(name[6:11]) for name in before}
    assert result["done"], "the first attempt was stopped before its last shard"
    assert sorted(result["skipped"] + result["done"]) == list(range(30))
    starts, finishes = shard_log_counts(run_dir, "embed", 30)
    assert finishes == [1] * 30, "no shard is encoded twice"
    assert sum(starts) <= 31  # at most the one shard that was cut short started again
    log = (run_dir / "logs" / "slurm" / "embed" / f"{job_id}_0_log.out").read_text()
    assert log.count("Starting with JobEnvironment") == 2  # the task ran twice


def test_dry_run_scripts_are_accepted_by_sbatch(demo_dir: Path, tmp_path: Path) -> None:
    from ubsafe.launch.slurm import cluster_max_array_size

    slurm_up("--max-array-size", str(MAX_ARRAY_SIZE))
    assert cluster_max_array_size() == MAX_ARRAY_SIZE
    out = ubsafe(
        "submit", "effectiveness", demo_dir, "--out", tmp_path / "run", *SLURM,
        "--partition", "gpu", "--gpus-per-task", 1, "--shard-size", 32, "--dry-run",
    ).output  # fmt: skip
    scripts = ["#!/bin/bash" + p.split("\n# --- ")[0] for p in out.split("#!/bin/bash")[1:]]
    assert len(scripts) == 5  # embed, fit, score, reduce, report
    for i, script in enumerate(scripts):
        path = tmp_path / f"script-{i}.sh"
        # The dependency on jobs not yet submitted is a placeholder: test the rest.
        path.write_text(re.sub(r"^#SBATCH --dependency=.*\n", "", script, flags=re.MULTILINE))
        check = subprocess.run(
            ["sbatch", "--test-only", str(path)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr
        assert "to start at" in check.stderr
    assert not (tmp_path / "run").exists()


def test_a_refused_sbatch_names_the_reason_and_the_jobs_already_submitted(
    demo_dir: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "site.toml"
    profile.write_text(
        'partition = "cpu"\ncpus_per_task = 1\nmem_gb = 1\n[additional]\nhold = true\n'
        # a request every node can hold, but with a feature no node has: sbatch refuses it
        '[stage.score]\nconstraint = "no-such-feature"\n'
    )
    run_dir = tmp_path / "run"
    result = ubsafe(
        "submit", "effectiveness", demo_dir, "--out", run_dir, "--profile", profile,
        "--shard-size", 66, expect=1,
    )  # fmt: skip
    ids = recorded_job_ids(run_dir)
    try:
        assert len(ids) == 2  # embed and fit went in before score was refused
        assert "sbatch refused the score array of 2 task(s)" in result.output
        assert "invalid feature" in result.output.lower()
        assert f"jobs {' '.join(ids)} (embed, fit)" in result.output
        assert f"scancel {' '.join(ids)}" in result.output
    finally:
        subprocess.run(["scancel", *ids], check=False)
