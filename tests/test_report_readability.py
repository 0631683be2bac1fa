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


def captured_figure(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    from ubsafe.report import figures

    seen: list[object] = []

    def keep(fig: object) -> figures.Png:
        seen.append(fig)
        return figures.Png(b"", 0, 0)

    monkeypatch.setattr(figures, "to_png", keep)
    return seen


def test_a_two_row_panel_is_not_stretched_to_its_neighbours_height(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ubsafe.report import figures

    rows = []
    for name, cats in (("q16", 12), ("nudenet", 2), ("probe-all", 12), ("sd_filter", 5)):
        for k in range(cats):
            for source in ("real", "ai"):
                rows.append(
                    {"classifier": name, "category": f"c{k:02d}", "source": source}
                    | {"f1": 0.5, "f1_lo": 0.4, "f1_hi": 0.6}
                )
    seen = captured_figure(monkeypatch)
    figures.effectiveness(pd.DataFrame(rows), ["q16", "nudenet", "probe-all", "sd_filter"])
    fig = seen[0]
    inches = fig.get_size_inches()[1]  # type: ignore[attr-defined]
    boxes = [ax.get_position() for ax in fig.axes]  # type: ignore[attr-defined]
    heights = [box.height * inches for box in boxes]
    assert heights[1] / heights[0] == pytest.approx((2 + 0.6) / (12 + 0.6))
    assert heights[3] / heights[2] == pytest.approx((5 + 0.6) / (12 + 0.6))
    assert boxes[0].y1 == pytest.approx(boxes[1].y1)  # top-aligned within their row


def test_every_precision_recall_panel_has_its_axis_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    from ubsafe.report import figures

    names = ["q16", "nudenet", "probe-all", "sd_filter"]  # two rows of panels
    rows = [
        {"classifier": name, "category": cat, "source": source, "precision": 0.7, "recall": 0.4}
        for name in names
        for cat in ("Hate", "Sexual")
        for source in ("real", "ai")
    ]
    seen = captured_figure(monkeypatch)
    figures.precision_recall(pd.DataFrame(rows), names)
    fig = seen[0]
    fig.canvas.draw()  # type: ignore[attr-defined]
    panels = [ax for ax in fig.axes if ax.get_visible()]  # type: ignore[attr-defined]
    assert len(panels) == len(names)
    for ax in panels:
        xs = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        ys = [t.get_text() for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
        assert xs and ys, ax.get_title()
