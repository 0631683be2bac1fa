"""What a reader of the report needs to judge a number: its n, a flag on cells too small for
their interval, one row per distinct drift, and a word where an interval and a test seem to
disagree."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import Written, write_results
from report_html import parse

from ubsafe.report import render_report


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    return write_results(tmp_path_factory.mktemp("readable") / "alpha", n=400)


def edit(root: Path, name: str, change: object) -> None:
    path = root / "results" / name
    frame = pd.read_csv(path)
    change(frame)  # type: ignore[operator]
    frame.to_csv(path, index=False)


def test_small_cells_show_their_n_and_a_flagged_interval(tmp_path: Path, written: Written) -> None:
    root = tmp_path / "run"
    (root / "results").mkdir(parents=True)
    for path in (written.root / "results").iterdir():
        (root / "results" / path.name).write_bytes(path.read_bytes())

    def shrink(frame: pd.DataFrame) -> None:
        at = (frame.classifier == "nudenet") & (frame.category == "Sexual")
        frame.loc[at & (frame.source == "real"), "n"] = 7

    edit(root, "effectiveness.csv", shrink)
    index = render_report([root])
    html = index.read_text(encoding="utf-8")
    table = parse(html).table("F1 on real-world images")
    small = table.cell(("nudenet",), "Sexual").split("\n")
    assert small[-1] == "n=7 †"
    large = table.cell(("q16",), "Violence").split("\n")
    assert large[-1].startswith("n=") and "†" not in large[-1]
    assert '<span class="ci small">' in html and '<span class="n small">n=7 †</span>' in html
    assert "† n &lt; 20" in html or "† n < 20" in html, "the flag is explained"
    markdown = (index.parent / "report.md").read_text(encoding="utf-8")
    assert "n=7 †" in markdown
    assert "`" not in html, "no literal backticks in the page"


def test_drift_rows_of_classifiers_that_move_alike_are_shown_once(
    tmp_path: Path, written: Written
) -> None:
    root = tmp_path / "run"
    (root / "results").mkdir(parents=True)
    for path in (written.root / "results").iterdir():
        (root / "results" / path.name).write_bytes(path.read_bytes())

    def twin(frame: pd.DataFrame) -> pd.DataFrame:
        copy = frame[frame.classifier == "probe-all"].assign(classifier="probe-real")
        return pd.concat([frame, copy], ignore_index=True)

    path = root / "results" / "robustness.csv"
    twin(pd.read_csv(path)).to_csv(path, index=False)
    view = parse(render_report([root]).read_text(encoding="utf-8"))
    drift = view.table("Mean cosine, clean vs corrupted embedding")
    keys = {row[0] for row in drift.rows()}
    assert "probe-all, probe-real" in keys
    assert "probe-all" not in keys and "probe-real" not in keys
    # Robust Accuracy is per classifier still: both show
    ra = view.table("Robust Accuracy by corruption and severity")
    assert {"probe-all", "probe-real"} <= {row[0] for row in ra.rows()}


def test_the_pairs_section_says_why_an_interval_and_mcnemar_can_differ(written: Written) -> None:
    html = render_report([written.root]).read_text(encoding="utf-8")
    assert "they test different things" in html
