"""Robustness end to end: corruptions and attacks, shard- and thread-invariant, failures named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ubsafe.data.demo import write_demo

CONFIG = """
classifiers = ["probe-real", "probe-all", "nudenet"]
perturbations = ["gaussian_noise", "brightness", "jpeg_compression"]
severities = [1, 4]
attacks = ["fgsm", "pgd"]
attack_eps = [2.0]
attack_steps = 3
bootstrap = 2000
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rob")
    config = root / "robust.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return write_demo(root / "data", n=110, seed=5), config


def run_robustness(
    data: Path, config: Path, out: Path, shard_size: int, workers: int = 1
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "ubsafe",
        "run",
        "robustness",
        str(data),
        "--out",
        str(out),
        "--config",
        str(config),
        "--shard-size",
        str(shard_size),
        "--workers",
        str(workers),
    ]
    return subprocess.run(
        cmd, env={**os.environ, "UBSAFE_PROGRESS": "0"}, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def runs(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    data, config = setup
    root = tmp_path_factory.mktemp("robruns")
    out = {}
    for shards, size, workers in ((1, 110, 1), (3, 37, 1), (16, 7, 2)):  # also any worker count
        result = run_robustness(data, config, root / f"s{shards}", size, workers)
        assert result.returncode == 0, result.stderr[-3000:]
        out[shards] = root / f"s{shards}"
    return out


def test_robustness_identical_for_any_shard_count(runs: dict[int, Path]) -> None:
    reference = (runs[1] / "results" / "robustness.csv").read_bytes()
    for shards in (3, 16):
        assert (runs[shards] / "results" / "robustness.csv").read_bytes() == reference, shards
    table = pd.read_csv(runs[1] / "results" / "robustness.csv")
    assert set(table.perturbation) == {
        "gaussian_noise",
        "brightness",
        "jpeg_compression",
        "fgsm",
        "pgd",
    }
    # NudeNet (ONNX, no gradients) is judged under corruptions only, without embedding drift
    nudenet = table[table.classifier == "nudenet"]
    assert len(nudenet) and set(nudenet.family) != {"attack"} and nudenet.mean_cosine.isna().all()
    attacked = table[table.family == "attack"]
    assert set(attacked.classifier) == {"probe-real", "probe-all"}
    assert (
        (attacked.robust_accuracy - (1 - attacked.flip_rate)).abs() < 1e-9
    ).all()  # only correct ones


def test_robustness_identical_for_numba_threads_1_and_2(
    runs: dict[int, Path], tmp_path: Path
) -> None:
    outputs = []
    for threads in ("1", "2"):
        copy = tmp_path / f"t{threads}"
        shutil.copytree(runs[3], copy)
        shutil.rmtree(copy / "results")
        env = {**os.environ, "NUMBA_NUM_THREADS": threads}
        subprocess.run(
            [sys.executable, "-m", "ubsafe", "reduce", str(copy)],
            check=True,
            env=env,
            capture_output=True,
        )
        outputs.append((copy / "results" / "robustness.csv").read_bytes())
    assert outputs[0] == outputs[1] == (runs[1] / "results" / "robustness.csv").read_bytes()


def test_robust_accuracy_matches_a_direct_count(runs: dict[int, Path]) -> None:
    """RA from robustness.csv equals counting the compare shards' rows by hand."""
    run = runs[3]
    rows = pd.concat(
        [pd.read_parquet(p) for p in sorted((run / "shards" / "compare").glob("shard-*.parquet"))]
    )
    plan = pd.read_parquet(run / "plan.parquet").set_index("sample_id")
    rows["label"] = plan.loc[rows.sample_id, "label"].to_numpy()
    table = pd.read_csv(run / "results" / "robustness.csv")
    for row in table[table.source == "all"].itertuples():
        mine = rows[
            (rows.classifier == row.classifier)
            & (rows.perturbation == row.perturbation)
            & (rows.severity == row.severity)
        ]
        correct = mine[mine.pred_clean == mine.label]
        assert row.n == len(correct)
        assert row.robust_accuracy == pytest.approx(
            (correct.pred == correct.label).mean(), abs=1e-6
        )
        assert row.flip_rate == pytest.approx((mine.pred != mine.pred_clean).mean(), abs=1e-6)
        assert row.ra_lo <= row.robust_accuracy + 1e-9 <= row.ra_hi + 2e-9


def test_a_failed_attack_shard_is_named_by_status_and_reduce(
    setup: tuple[Path, Path], tmp_path: Path, cli
) -> None:
    data, config = setup
    out = tmp_path / "run"
    # a real failure of the real stage: the attack output of shard 1 cannot be written
    (out / "shards" / "attack" / "shard-00001.h5").mkdir(parents=True)
    result = run_robustness(data, config, out, 37, workers=2)
    assert result.returncode != 0
    assert "stage attack: 1 shard(s) failed [1]" in result.stderr
    status = cli("status", out, "--no-scheduler")
    assert status.exit_code == 1
    assert "attack" in status.output and "failed 1" in status.output
    assert "shard 1 failed" in status.output and "logs/attack/shard-00001.log" in status.output
    reduce = cli("reduce", out)
    assert reduce.exit_code != 0
    assert "attack: 1 shard(s): 1" in reduce.output and "shard 1: failed (see" in reduce.output
