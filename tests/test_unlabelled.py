"""Datasets without labels: classifiers still judge every image; label-needing tables are skipped
with a note, and what cannot work without labels is refused before any job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import png_bytes, simple_rows, write_unsafebench

from ubsafe.data.dataset import open_dataset
from ubsafe.taxonomy import NO_LABEL


def unlabelled_manifest(root: Path, n: int = 24) -> Path:
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        (root / "images" / f"{i:03d}.png").write_bytes(png_bytes(i, (48, 40)))
        rows.append(
            {"path": f"images/{i:03d}.png", "category": "Sexual", "source": "Laion5B"}
            if i % 2
            else {"path": f"images/{i:03d}.png", "category": "Sexual", "source": "Lexica"}
        )
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_unlabelled_manifest_runs_effectiveness_to_completion(tmp_path: Path, cli: Any) -> None:
    manifest = unlabelled_manifest(tmp_path / "data")
    out = tmp_path / "run"
    result = cli(
        "run", "effectiveness", manifest, "--out", out, "--classifiers", "nudenet",
        "--encoder", "tiny",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "note:    the dataset has no labels" in result.output
    results = out / "results"
    predictions = pq.read_table(results / "predictions.parquet").to_pandas()
    assert sorted(predictions["sample_id"]) == sorted(f"images/{i:03d}.png" for i in range(24))
    assert set(predictions["pred"]) <= {0, 1} and (predictions["label"] == NO_LABEL).all()
    for name in ("effectiveness.csv", "gaps.csv", "pairs.csv"):
        assert not (results / name).exists(), name
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert summary["labelled"] is False and "no labels" in summary["notes"][0]
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "the dataset has no labels" in report
    # a relaunch finds everything done
    again = cli(
        "run", "effectiveness", manifest, "--out", out, "--classifiers", "nudenet",
        "--encoder", "tiny",
    )  # fmt: skip
    assert again.exit_code == 0, again.output


def test_unsafebench_layout_without_labels(tmp_path: Path) -> None:
    root = write_unsafebench(tmp_path / "ub", {"test": simple_rows(6)})
    for path in (root / "data").glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop(["safety_label"]), path)
    dataset = open_dataset(root)
    assert not dataset.labelled and (dataset.table["label"] == NO_LABEL).all()
    assert open_dataset(write_unsafebench(tmp_path / "lab", {"test": simple_rows(6)})).labelled


def test_labels_in_some_files_only_is_an_issue(tmp_path: Path) -> None:
    from ubsafe.data.issues import DatasetError

    root = write_unsafebench(tmp_path / "ub", {"test": simple_rows(6)}, files_per_split=2)
    first = sorted((root / "data").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(first).drop(["safety_label"]), first)
    with pytest.raises(DatasetError, match="no safety_label column, while"):
        open_dataset(root)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("effectiveness", "--classifiers", "probe-all"), ["has no labels", "probe-all"]),
        (("robustness", "--classifiers", "nudenet"), ["has no labels", "Robust Accuracy"]),
    ],
)
def test_what_needs_labels_is_refused_before_any_job(
    tmp_path: Path, cli: Any, args: tuple[str, ...], words: list[str]
) -> None:
    manifest = unlabelled_manifest(tmp_path / "data", n=4)
    out = tmp_path / "run"
    result = cli("run", args[0], manifest, "--out", out, "--encoder", "tiny", *args[1:])
    assert result.exit_code != 0
    assert all(w in result.output for w in words), result.output
    assert "Traceback" not in result.output and not (out / "shards").exists()
