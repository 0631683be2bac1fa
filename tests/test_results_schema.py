"""One schema per results file: the reducer writes exactly its columns, the report reads them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ubsafe.data.demo import write_demo
from ubsafe.report.load import RESULT_COLUMNS, load_results
from ubsafe.results import RESULT_FILES, result_file

CONFIG = """
classifiers = ["probe-all", "nudenet"]
perturbations = ["brightness"]
severities = [2]
attacks = ["fgsm"]
attack_eps = [2.0]
attack_steps = 2
bootstrap = 200
"""

INTEGER = ("int8", "int32", "int64")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from ubsafe.cli import main

    root = tmp_path_factory.mktemp("schema")
    data = write_demo(root / "data", n=88, seed=3)
    (root / "run.toml").write_text(CONFIG, encoding="utf-8")
    out = root / "run"
    args = ["run", "robustness", str(data), "--out", str(out), "--config", str(root / "run.toml")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_every_results_file_is_written_in_its_schema(run: Path) -> None:
    for name, schema in RESULT_FILES.items():
        path = run / "results" / name
        if schema.when:  # written by other kinds of runs (generated images)
            assert not path.exists(), name
            continue
        assert path.is_file(), name
        if name.endswith(".parquet"):
            arrow = pq.read_schema(path)
            assert tuple(arrow.names) == schema.names, name
            for column in schema.columns:
                kind = str(arrow.field(column.name).type)
                expected = {
                    "str": ("string", "large_string"),
                    "float32": ("float",),
                    "float64": ("double",),
                }
                assert kind in expected.get(column.dtype, (column.dtype,)), (name, column.name)
            continue
        frame = pd.read_csv(path)
        assert tuple(frame.columns) == schema.names, name
        if name == "skipped.csv":
            # the demo data has no undecodable image: every row is scored or meant not to be
            assert frame.empty, name
            continue
        assert len(frame), name
        for column in schema.columns:
            if column.dtype in INTEGER:
                assert pd.api.types.is_integer_dtype(frame[column.name]), (name, column.name)


def test_every_column_the_report_reads_is_written(run: Path) -> None:
    results = load_results(run)  # refuses a file that lacks a column the report reads
    for name, wanted in RESULT_COLUMNS.items():
        assert wanted == result_file(name).names
        if result_file(name).when:
            continue  # written only by some runs (test_mitigation_run checks the mitigation tables)
        table = results.get(name.split(".")[0])
        assert table is not None, name
        assert set(wanted) <= set(table.columns), name
    # the columns that had drifted between the writer and the reader
    assert {"n_images", "flip_lo", "flip_hi"} <= set(RESULT_COLUMNS["robustness.csv"])


def test_a_table_missing_a_schema_column_is_not_written() -> None:
    schema = result_file("skipped.csv")
    with pytest.raises(ValueError, match="lacks column"):
        schema.conform(pd.DataFrame({"sample_id": ["a"], "stage": ["score"]}))
    with pytest.raises(KeyError, match="no results file"):
        result_file("nope.csv")
