"""Effectiveness end to end on demo data: shard and thread invariant, reconciled, never partial."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ubsafe.data.demo import write_demo

RESULT_FILES = (
    "effectiveness.csv",
    "gaps.csv",
    "pairs.csv",
    "skipped.csv",
    "unscored.csv",
    "shift.csv",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo(tmp_path_factory.mktemp("eff") / "data", n=176, seed=11)


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The same data reduced with 1, 3 and 16 shards."""
    from click.testing import CliRunner

    from ubsafe.cli import main

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for shards, size in ((1, 176), (3, 59), (16, 11)):
        run = root / f"s{shards}"
        result = CliRunner().invoke(
            main,
            ["run", "effectiveness", str(data), "--out", str(run), "--shard-size", str(size)],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        out[shards] = run
    return out


def test_results_identical_for_any_shard_count(runs: dict[int, Path]) -> None:
    import pyarrow.parquet as pq

    assert len(list((runs[16] / "shards" / "score").glob("shard-*.parquet"))) == 16
    for name in RESULT_FILES:
        reference = (runs[1] / "results" / name).read_bytes()
        for shards in (3, 16):
            assert (runs[shards] / "results" / name).read_bytes() == reference, (name, shards)
    tables = [
        pq.read_table(runs[s] / "results" / "predictions.parquet").to_pandas() for s in (1, 3, 16)
    ]
    for table in tables[1:]:
        pd.testing.assert_frame_equal(
            table.sort_values(["sample_id", "classifier"]).reset_index(drop=True),
            tables[0].sort_values(["sample_id", "classifier"]).reset_index(drop=True),
        )


def test_results_identical_for_numba_threads_1_and_2(runs: dict[int, Path], tmp_path: Path) -> None:
    outputs = {}
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
        outputs[threads] = {name: (copy / "results" / name).read_bytes() for name in RESULT_FILES}
    assert outputs["1"] == outputs["2"]
    assert (
        outputs["1"]["effectiveness.csv"]
        == (runs[1] / "results" / "effectiveness.csv").read_bytes()
    )


def test_every_row_is_predicted_skipped_or_unscored(runs: dict[int, Path]) -> None:
    run = runs[3]
    plan = pd.read_parquet(run / "plan.parquet")
    predicted = set(pd.read_parquet(run / "results" / "predictions.parquet")["sample_id"])
    skipped = pd.read_csv(run / "results" / "skipped.csv")
    unscored = pd.read_csv(run / "results" / "unscored.csv")
    kinds = [predicted, set(skipped["sample_id"]), set(unscored["sample_id"])]
    assert set(plan["sample_id"]) == set().union(*kinds)
    assert sum(len(k) for k in kinds) == len(plan), "no row is of two kinds"
    for table in (skipped, unscored):
        assert table.empty or table["reason"].str.len().min() > 0


def test_effectiveness_table_matches_sklearn(runs: dict[int, Path]) -> None:
    from sklearn.metrics import f1_score, precision_score, recall_score

    pred = pd.read_parquet(runs[1] / "results" / "predictions.parquet")
    table = pd.read_csv(runs[1] / "results" / "effectiveness.csv")
    for (classifier, category, source), row in table.set_index(
        ["classifier", "category", "source"]
    ).iterrows():
        mine = pred[pred.classifier == classifier]
        if category != "overall":
            mine = mine[mine.category == category]
        if source != "all":
            mine = mine[mine.source == source]
        assert row.n == len(mine)
        assert row.f1 == pytest.approx(f1_score(mine.label, mine.pred, zero_division=0), abs=1e-6)
        assert row.precision == pytest.approx(
            precision_score(mine.label, mine.pred, zero_division=0), abs=1e-6
        )
        assert row.recall == pytest.approx(
            recall_score(mine.label, mine.pred, zero_division=0), abs=1e-6
        )
        assert row.f1_lo <= row.f1 + 1e-9 and row.f1 <= row.f1_hi + 1e-9


def test_reduce_names_a_deleted_shard(runs: dict[int, Path], tmp_path: Path, cli) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(runs[3], copy)
    (copy / "shards" / "score" / "shard-00001.parquet").unlink()
    result = cli("reduce", copy)
    assert result.exit_code != 0
    assert "score: 1 shard(s): 1" in result.output and "missing" in result.output
    result = cli("reduce", copy, "--allow-missing")
    assert result.exit_code == 0, result.output
    skipped = pd.read_csv(copy / "results" / "skipped.csv")
    lost = skipped[skipped.reason.str.contains("shard 1: score output missing")]
    plan = pd.read_parquet(copy / "plan.parquet")
    assert set(lost.sample_id) == set(plan[plan.shard == 1].sample_id)


def test_second_run_recomputes_nothing(runs: dict[int, Path], data: Path, cli) -> None:
    run = runs[3]
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*.h5")}
    before.update({p: p.stat().st_mtime_ns for p in (run / "shards").rglob("*.parquet")})
    result = cli("run", "effectiveness", data, "--out", run, "--shard-size", "59")
    assert result.exit_code == 0, result.output
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before
