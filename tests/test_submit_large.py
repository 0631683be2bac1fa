"""A stage of 2,500 shards on a cluster whose MaxArraySize is 1001: `ubsafe submit` splits it into
arrays Slurm accepts, chains the next stage on all of them, and the run completes.

Slow (about ten minutes on two cores): 2,500 demo images, one per shard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from slurm_fixtures import (
    MAX_ARRAY_SIZE,
    cluster,  # noqa: F401  (fixture)
    sacct_states,
    slurm_up,
    ubsafe,
    wait_for_run,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("cluster")]

N_SHARDS = 2500


def test_2500_shards_are_split_below_max_array_size_run_and_complete(tmp_path: Path) -> None:
    from ubsafe.data.demo import write_demo
    from ubsafe.launch.slurm import cluster_max_array_size

    slurm_up("--max-array-size", str(MAX_ARRAY_SIZE))
    assert cluster_max_array_size() == MAX_ARRAY_SIZE
    data = write_demo(tmp_path / "data", n=N_SHARDS, seed=3)
    profile = tmp_path / "cluster.toml"
    # The encoder's start-up is paid once per embed task; scoring a probe is cheap, so the score
    # stage keeps two shards per task: 1,250 tasks, more than one array may hold.
    profile.write_text(
        'partition = "cpu"\ncpus_per_task = 1\nmem_gb = 0.5\ntime_min = 30\n'
        "array_parallelism = 1000\n"
        "[stage.embed]\nshards_per_task = 625\nmem_gb = 1.5\n"
        "[stage.score]\nshards_per_task = 2\n"
    )
    run_dir = tmp_path / "run"
    out = ubsafe(
        "submit", "effectiveness", data, "--out", run_dir, "--profile", profile,
        "--shard-size", 1, "--classifiers", "probe-all", "--device", "cpu",
    ).output  # fmt: skip
    assert re.search(r"embed\s+2500 shard\(s\) in 4 task\(s\): job \d+\n", out), out
    match = re.search(r"score\s+2500 shard\(s\) in 1250 task\(s\): jobs (\d+) (\d+)\n", out)
    assert match, out
    first, second = match.groups()

    records = [
        json.loads(line)
        for line in (run_dir / "logs" / "slurm" / "jobs.jsonl").read_text().splitlines()
    ]
    score = [r for r in records if r["stage"] == "score"]
    assert [len(r["tasks"]) for r in score] == [MAX_ARRAY_SIZE, 1250 - MAX_ARRAY_SIZE]
    assert sorted(s for r in score for t in r["tasks"] for s in t) == list(range(N_SHARDS))
    (reduce,) = [r for r in records if r["stage"] == "reduce"]
    assert reduce["dependency"] == f"afterany:{first}:{second}"

    wait_for_run(run_dir, timeout=3600)
    for job_id, n_tasks in ((first, MAX_ARRAY_SIZE), (second, 1250 - MAX_ARRAY_SIZE)):
        states = sacct_states(job_id)
        assert len(states) == n_tasks
        assert set(states.values()) == {"COMPLETED"}
        assert max(int(task.split("_")[1]) for task in states) == n_tasks - 1
    document = json.loads(ubsafe("status", run_dir, "--json").output)
    assert document["complete"] is True
    counts = {s["stage"]: s["counts"]["done"] for s in document["stages"]}
    assert counts == {"embed": N_SHARDS, "fit": 1, "score": N_SHARDS, "reduce": 1, "report": 1}
