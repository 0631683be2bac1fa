"""Resuming submitted runs on a real Slurm, through the whole effectiveness chain: a failing shard
that the reduce names, kill -9 of a task mid-shard, and a preemption signal; in each case running
the same `ubsafe submit` again (or the requeued task) finishes only what is missing, and the results
equal those of an uninterrupted `ubsafe run`, byte for byte. Slow: a few minutes each.
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
    N_SHARDS,
    SHARD_SIZE,
    SLURM,
    assert_same_embeddings,
    assert_same_results,
    block_output,
    cluster,  # noqa: F401  (fixture)
    embedding_files,
    latest_jobs,
    local_effectiveness,
    recorded_job_ids,
    running_shard,
    sacct_states,
    shard_log_counts,
    stat_key,
    status_counts,
    status_document,
    task_result,
    ubsafe,
    unblock_output,
    wait_for_run,
    wait_until,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("cluster")]


@pytest.fixture(scope="module")
def reference(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's effectiveness results from one uninterrupted `ubsafe run` on this machine."""
    return local_effectiveness(demo_dir, tmp_path_factory.mktemp("local") / "run")


def test_failing_score_shard_is_named_by_the_reduce_and_a_resubmission_runs_only_it(
    demo_dir: Path, reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    command = (
        "submit", "effectiveness", demo_dir, "--out", run_dir, *SLURM, "--shard-size",
        SHARD_SIZE, "--shards-per-task", 6,
    )  # fmt: skip
    ubsafe("plan", demo_dir, "--out", run_dir, "--shard-size", SHARD_SIZE)
    blocked = run_dir / "shards" / "score" / "shard-00002.parquet"
    block_output(blocked)  # the score stage's own rename onto it fails
    ubsafe(*command)
    wait_for_run(run_dir)

    jobs = {j["stage"]: j["job_id"] for j in latest_jobs(run_dir)}
    score_states = sacct_states(jobs["score"])
    assert score_states.pop(f"{jobs['score']}_0") == "FAILED"  # the task holding shards 0-5
    assert set(score_states.values()) == {"COMPLETED"}
    assert set(sacct_states(jobs["reduce"]).values()) == {"FAILED"}  # ran anyway (afterany)
    assert set(sacct_states(jobs["report"]).values()) == {"CANCELLED"}  # afterok never met
    assert status_counts(run_dir, "score", expect=1) == {"done": N_SHARDS - 1, "failed": 1}
    assert status_counts(run_dir, "reduce", expect=1) == {"failed": 1}
    reduce_error = json.loads((run_dir / "logs" / "reduce" / "shard-00000.error.json").read_text())
    assert "score: 1 shard(s): 2" in reduce_error["message"]
    text = ubsafe("status", run_dir, expect=1).output
    assert "shard 2 failed: builtins.IsADirectoryError" in text
    assert "score: 1 shard(s): 2" in text  # the reduce's error names the missing shard
    assert not (run_dir / "results" / "effectiveness.csv").exists()

    score_files = {p.name: stat_key(p) for p in (run_dir / "shards" / "score").glob("*.parquet")}
    score_files.pop("shard-00002.parquet")  # the blocking directory
    unblock_output(blocked)
    out = ubsafe(*command).output
    assert not re.search(r"^(embed|fit)\s", out, re.MULTILINE), out
    assert re.search(r"score\s+1 shard\(s\) in 1 task\(s\)", out), out
    assert [(j["stage"], j["tasks"]) for j in latest_jobs(run_dir)] == [
        ("score", [[2]]),
        ("reduce", [[0]]),
        ("report", [[0]]),
    ]
    wait_for_run(run_dir)
    assert status_document(run_dir, expect=0)["complete"] is True
    after = {p.name: stat_key(p) for p in (run_dir / "shards" / "score").glob("*.parquet")}
    assert {name: after[name] for name in score_files} == score_files
    assert_same_results(run_dir, reference)


def test_kill_9_mid_shard_then_relaunch_gives_byte_identical_results(
    demo_dir: Path, reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    # One embed task over all 17 shards, one image per encoder pass: slow enough to catch.
    command = (
        "submit", "effectiveness", demo_dir, "--out", run_dir, *SLURM, "--shard-size",
        SHARD_SIZE, "--shards-per-task", N_SHARDS, "--batch-size", 1,
    )  # fmt: skip
    ubsafe(*command)
    found = wait_until(lambda: running_shard(run_dir, "embed", 3), 300, "embed shard 3", 0.02)
    shard, record = found
    os.kill(int(record["pid"]), signal.SIGKILL)
    wait_for_run(run_dir)

    jobs = {j["stage"]: j["job_id"] for j in latest_jobs(run_dir)}
    assert set(sacct_states(jobs["embed"]).values()) == {"FAILED"}
    assert status_counts(run_dir, "embed", expect=1) == {
        "done": shard,
        "interrupted": 1,
        "missing": N_SHARDS - 1 - shard,
    }
    text = ubsafe("status", run_dir, expect=1).output
    assert f"shard {shard} interrupted: pid {record['pid']}" in text
    assert not list(run_dir.glob("embeddings/*/*/clean/.ubsafe-tmp-*")), "no partial file left"

    out = ubsafe(*command).output
    assert re.search(rf"embed\s+{N_SHARDS - shard} shard\(s\) in 1 task\(s\)", out), out
    wait_for_run(run_dir)
    assert status_document(run_dir, expect=0)["complete"] is True
    assert_same_results(run_dir, reference)


@pytest.fixture(scope="module")
def demo_600(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ubsafe.data.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("demo600") / "data", n=600, seed=11)


def test_preemption_signal_checkpoints_requeues_and_skips_finished_shards(
    demo_600: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    ubsafe(
        "submit", "embed", demo_600, "--out", run_dir, *SLURM, "--shard-size", 20,
        "--shards-per-task", 30, "--batch-size", 1,
    )  # fmt: skip
    (job_id,) = recorded_job_ids(run_dir)
    wait_until(lambda: len(embedding_files(run_dir)) >= 2, 300, "two finished shards")
    # What Slurm sends a preempted job (with preempt_send_user_signal), and a job nearing its
    # time limit: submitit's signal, USR2. submitit calls the task's checkpoint() and requeues it.
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
    result = task_result(run_dir, "embed", job_id)
    assert set(result["skipped"]) == {int(name[6:11]) for name in before}
    assert sorted(result["skipped"] + result["done"]) == list(range(30))
    _, finishes = shard_log_counts(run_dir, "embed", 30)
    assert finishes == [1] * 30
    reference = tmp_path / "local"
    ubsafe("run", "embed", demo_600, "--out", reference, "--shard-size", 20)
    assert_same_embeddings(run_dir, reference)
    # The shard the signal caught says so in its log; the requeued attempt redid it.
    interrupted = [
        s
        for s in range(30)
        if "interrupted (SystemExit)" in (run_dir / "logs/embed" / f"shard-{s:05d}.log").read_text()
    ]
    assert len(interrupted) <= 1 and set(interrupted) <= set(result["done"])
