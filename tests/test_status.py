"""`ubsafe status` reads a run's state from its directory: done, running, failed (with the error,
its job and log), interrupted (a killed process) and missing; a relaunch runs only what is not
done. Real runs of the embed stage on this machine, no scheduler."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_fixtures import (
    block_output,
    embedding_arrays,
    embedding_files,
    stat_key,
    ubsafe,
    unblock_output,
    wait_until,
)

from ubsafe.launch.status import process_alive
from ubsafe.launch.worker import running_path
from ubsafe.rundir import Run


def embedding_path(run_dir: Path, shard: int) -> Path:
    """Where the embed stage writes a shard of the run's clean embeddings."""
    from ubsafe.embeddings import shard_file
    from ubsafe.stages.embed import cache_key

    run = Run.load(run_dir)
    return shard_file(run, cache_key(run, run.config.encoder), "clean", shard)


def status_json(run_dir: Path, expect: int) -> dict[str, object]:
    result = ubsafe("status", run_dir, "--json", "--no-scheduler", expect=expect)
    return json.loads(result.output)


def counts(document: dict[str, object], stage: str) -> dict[str, int]:
    stages = {s["stage"]: s for s in document["stages"]}  # type: ignore[attr-defined]
    return {k: v for k, v in stages[stage]["counts"].items() if v}


def test_failed_shard_is_shown_with_its_error_and_log_and_a_rerun_runs_only_it(
    demo_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    ubsafe("plan", demo_dir, "--out", run_dir, "--shard-size", 44)  # 132 samples: 3 shards
    blocked = embedding_path(run_dir, 1)
    block_output(blocked)

    failed = ubsafe("run", "embed", demo_dir, "--out", run_dir, "--shard-size", 44, expect=1)
    assert "shard(s) failed [1]" in failed.output

    document = status_json(run_dir, expect=1)
    assert document["complete"] is False
    assert counts(document, "embed") == {"done": 2, "failed": 1}
    text = ubsafe("status", run_dir, "--no-scheduler", expect=1).output
    error_file = run_dir / "logs" / "embed" / "shard-00001.error.json"
    log_file = run_dir / "logs" / "embed" / "shard-00001.log"
    assert "shard 1 failed: builtins.IsADirectoryError" in text
    assert str(error_file) in text and str(log_file) in text
    error = json.loads(error_file.read_text())
    assert error["type"] == "builtins.IsADirectoryError"
    assert str(blocked) in error["message"]
    assert "Traceback" in error["traceback"] and error["shard"] == 1
    assert "IsADirectoryError" in log_file.read_text()  # the shard's own log has it too
    full = ubsafe("status", run_dir, "--no-scheduler", "--traceback", expect=1).output
    assert "os.replace(tmp, final)" in full

    done_before = {name: stat_key(p) for name, p in embedding_files(run_dir).items()}
    assert sorted(done_before) == ["shard-00000.h5", "shard-00002.h5"]
    unblock_output(blocked)
    ubsafe("run", "embed", demo_dir, "--out", run_dir, "--shard-size", 44)

    after = embedding_files(run_dir)
    assert sorted(after) == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    assert {name: stat_key(after[name]) for name in done_before} == done_before
    assert not error_file.exists(), "a shard that succeeds drops its old error.json"
    # `plan` started an effectiveness run: embed is complete, the stages after it are not.
    document = status_json(run_dir, expect=1)
    assert counts(document, "embed") == {"done": 3}
    assert counts(document, "fit") == {"missing": 1}


def test_running_then_killed_shard_shows_running_then_interrupted_and_is_redone(
    demo_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    ubsafe("plan", demo_dir, "--out", run_dir, "--shard-size", 66)  # 2 shards
    worker = subprocess.Popen(
        [sys.executable, "-m", "ubsafe.launch.worker", str(run_dir), "embed", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = Run.load(run_dir)
    try:
        marker = running_path(run, "embed", 0)
        wait_until(marker.is_file, 120, "the worker's running marker")
        # The worker is now inside the shard (importing and building the encoder, encoding).
        document = status_json(run_dir, expect=1)
        assert counts(document, "embed") == {"running": 1, "missing": 1}
        text = ubsafe("status", run_dir, "--no-scheduler", expect=1).output
        assert f"shard 0 running: pid {worker.pid} on {socket.gethostname()}" in text
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    assert marker.is_file(), "kill -9 leaves the marker behind"
    assert not embedding_files(run_dir)
    text = ubsafe("status", run_dir, "--no-scheduler", expect=1).output
    assert f"shard 0 interrupted: pid {worker.pid}" in text
    assert "a relaunch redoes it" in text

    ubsafe("run", "embed", demo_dir, "--out", run_dir, "--shard-size", 66)
    assert counts(status_json(run_dir, expect=1), "embed") == {"done": 2}
    assert not marker.exists()

    # The same shards written by one uninterrupted process hold the same arrays.
    reference = tmp_path / "reference"
    ubsafe("run", "embed", demo_dir, "--out", reference, "--shard-size", 66)
    for name, path in embedding_files(reference).items():
        want = embedding_arrays(path)
        got = embedding_arrays(embedding_files(run_dir)[name])
        assert want.keys() == got.keys()
        for key in want:
            assert (want[key] == got[key]).all(), (name, key)


def test_a_live_pid_that_started_after_the_marker_is_not_the_marker_s_process() -> None:
    host = socket.gethostname()
    me = {"host": host, "pid": os.getpid(), "started": time.time()}
    assert process_alive(me) is True
    # This process started before "an hour ago" was not true: a reused pid.
    assert process_alive({**me, "started": time.time() - 10**7}) is False
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_alive({**me, "pid": child.pid}) is False
    assert process_alive({**me, "host": "elsewhere.example"}) is None


@pytest.mark.parametrize("flag", ["--json", "--no-json"])
def test_status_of_a_fresh_plan_lists_every_stage_as_missing(
    demo_dir: Path, tmp_path: Path, flag: str
) -> None:
    run_dir = tmp_path / "run"
    ubsafe("plan", demo_dir, "--out", run_dir, "--shard-size", 66)
    result = ubsafe("status", run_dir, flag, "--no-scheduler", expect=1)
    if flag == "--json":
        document = json.loads(result.output)
        # `plan` starts an effectiveness run: every stage it needs is listed, nothing done.
        stages = [s["stage"] for s in document["stages"]]
        assert stages == ["embed", "fit", "score", "reduce", "report"]
        assert counts(document, "embed") == {"missing": 2}
        assert counts(document, "reduce") == {"missing": 1}
    else:
        assert "embed    missing 2" in result.output
