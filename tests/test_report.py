"""The report as its reader sees it: the right numbers in the right cells, runs side by side, clear
words where a run has no data, self-contained and reproducible files, the CLI and the stage."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import Written, write_results
from report_html import Page, parse
from sklearn.metrics import f1_score, precision_score, recall_score

from ubsafe.report import ReportError, render_report
from ubsafe.report.robustness import FAMILY_CAPTION
from ubsafe.taxonomy import CATEGORIES


@pytest.fixture(scope="module")
def alpha(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """A robustness run with every results file."""
    return write_results(tmp_path_factory.mktemp("runs") / "alpha", seed=0)


@pytest.fixture(scope="module")
def beta(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """An effectiveness-only run (no robustness.csv), other data."""
    return write_results(tmp_path_factory.mktemp("runs") / "beta", seed=1, robustness=False)


@pytest.fixture(scope="module")
def alpha_report(alpha: Written) -> Path:
    return render_report([alpha.root])


@pytest.fixture(scope="module")
def pair_report(alpha: Written, beta: Written, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both runs side by side, through the command line."""
    from click.testing import CliRunner

    from ubsafe.cli import main

    out = tmp_path_factory.mktemp("pair") / "both"
    result = CliRunner().invoke(
        main, ["report", str(alpha.root), str(beta.root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out / "index.html"), "the command prints the page's path"
    return out / "index.html"


def page(index: Path) -> Page:
    return parse(index.read_text(encoding="utf-8"))


def f1_of(written: Written, classifier: str, category: str, source: str) -> float:
    p = written.predictions
    rows = p[(p.classifier == classifier) & (p.category == category) & (p.source == source)]
    return float(f1_score(rows.label, rows.pred, zero_division=np.nan))


def results(written: Written, name: str) -> pd.DataFrame:
    return pd.read_csv(written.root / "results" / name)


# --- files ----------------------------------------------------------------------------------


def test_report_files_are_self_contained_and_complete(alpha_report: Path) -> None:
    out = alpha_report.parent
    assert alpha_report == out / "index.html" and out.name == "report"
    html = alpha_report.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must not fetch anything"
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} == {
        "effectiveness",
        "gap",
        "precision-recall",
        "robustness-corruptions",
        "robustness-attacks",
        "drift",
        "shift",
        "projection",
    }
    embedded = sorted(
        hashlib.sha256(base64.b64decode(img["src"].split(",", 1)[1])).hexdigest()
        for img in page(alpha_report).images
    )
    assert embedded == sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in pngs)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    linked = re.findall(r"\]\((figures/[^)]+\.png)\)", markdown)
    assert sorted(linked) == sorted(f"figures/{p.name}" for p in pngs)
    for table in page(alpha_report).tables:
        assert "**{}**".format(table.caption.replace("|", "\\|")) in markdown


def test_same_results_give_byte_identical_reports(
    alpha: Written, alpha_report: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    (again / "figures").mkdir(parents=True)
    (again / "figures" / "old-figure.png").write_bytes(b"from an earlier report")
    render_report([alpha.root], again)
    assert not (again / "figures" / "old-figure.png").exists(), (
        "figures of an earlier report are removed"
    )
    for path in sorted(alpha_report.parent.rglob("*")):
        if path.is_file():
            assert (
                again / path.relative_to(alpha_report.parent)
            ).read_bytes() == path.read_bytes(), path


# --- effectiveness --------------------------------------------------------------------------


def test_table3_shows_each_f1_in_its_cell(alpha: Written, alpha_report: Path) -> None:
    eff = results(alpha, "effectiveness.csv").set_index(["classifier", "category", "source"])
    for source, title in (("real", "real-world"), ("ai", "AI-generated")):
        table = page(alpha_report).table(f"F1 on {title} images")
        header = [c for c in table.header[-1] if c in (*CATEGORIES, "overall")]
        assert header == [*CATEGORIES, "overall"], (
            "categories in the taxonomy's order, overall last"
        )
        for classifier, category in (
            ("q16", "Violence"),
            ("multiheaded", "Political"),
            ("nsfw_detector", "Harassment"),
        ):
            value, interval, n = table.cell((classifier,), category).split("\n")
            assert value == f"{f1_of(alpha, classifier, category, source):.3f}"
            lo, hi, rows = eff.loc[(classifier, category, source), ["f1_lo", "f1_hi", "n"]]
            assert interval == f"[{lo:.3f}, {hi:.3f}]"
            assert n == f"n={int(rows):,}" + (" †" if rows < 20 else "")
        assert table.cell(("q16",), "Sexual") == "—", "q16 does not cover Sexual"
        assert table.cell(("nudenet",), "Violence") == "—"


def test_two_runs_side_by_side(alpha: Written, beta: Written, pair_report: Path) -> None:
    view = page(pair_report)
    table = view.table("F1 on real-world images")
    for written, label in ((alpha, "alpha"), (beta, "beta")):
        cell = table.cell(("q16",), "Violence", label)
        assert cell.split("\n")[0] == f"{f1_of(written, 'q16', 'Violence', 'real'):.3f}"
    settings = view.table("Run settings")
    assert settings.header[-1][1:] == ["alpha", "beta"]
    assert settings.cell(("seed",), "beta") == "1"
    assert "No robustness results in beta (an effectiveness-only run)." in view.text
    figures = {p.stem for p in (pair_report.parent / "figures").glob("*.png")}
    assert {
        "effectiveness-alpha",
        "effectiveness-beta",
        "robustness-corruptions-alpha",
        "shift",
    } <= figures
    assert "robustness-corruptions-beta" not in figures
    assert pair_report.parent.name == "both", "--out is honoured"
    assert (pair_report.parent / "report.md").is_file()


def test_runs_on_different_datasets_are_pooled(
    alpha: Written, pair_report: Path, tmp_path: Path
) -> None:
    captions = [table.caption for table in page(pair_report).tables]
    assert "F1 per dataset and pooled over all of them" not in captions, "same data: no pooling"
    other = write_results(tmp_path / "other", seed=2, robustness=False, dataset="/data/smid")
    view = page(render_report([alpha.root, other.root], tmp_path / "report"))
    table = view.table("F1 per dataset and pooled over all of them")
    both = pd.concat([alpha.predictions, other.predictions])
    for classifier in ("q16", "nudenet"):
        for dataset, rows in (
            ("unsafebench-demo", alpha.predictions),
            ("smid", other.predictions),
            ("overall", both),
        ):
            mine = rows[rows.classifier == classifier]
            value, interval = table.cell((classifier, dataset), "F1").split("\n")
            assert value == f"{f1_score(mine.label, mine.pred, zero_division=0):.3f}"
            lo, hi = (float(v) for v in interval.strip("[]").split(", "))
            assert lo <= float(value) <= hi
            assert table.cell((classifier, dataset), "n") == str(len(mine))


def test_gap_marks_and_summary_follow_the_p_values(alpha: Written, alpha_report: Path) -> None:
    gaps = results(alpha, "gaps.csv")
    f1 = gaps[gaps.metric == "f1"].dropna(subset=["p_value"])
    table = page(alpha_report).table("F1 gap per classifier and category")
    for _, row in f1.iterrows():
        p = float(row.p_value)
        expected = "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
        cell = table.cell((row.classifier, row.category), "p")
        assert cell.split(" ")[-1] == expected if expected else "*" not in cell, (
            row.classifier,
            row.category,
        )
        diff = table.cell((row.classifier, row.category), "real − AI").split("\n")[0]
        assert float(diff) == pytest.approx(row["diff"], abs=5e-4)
    significant = f1[f1.p_value < 0.05]
    worse = int((significant["diff"] > 0).sum())
    sentence = (
        f"{len(significant)} of {len(f1)} (classifier, category) cells differ significantly in F1 "
        f"between real and AI-generated images (p < 0.05); in {worse} of them"
    )
    assert sentence in page(alpha_report).text


def test_precision_recall_lists_the_cells_where_they_disagree(
    alpha: Written, alpha_report: Path
) -> None:
    p = alpha.predictions
    expected = set()
    for (classifier, category), rows in p.groupby(["classifier", "category"]):
        precision = precision_score(rows.label, rows.pred, zero_division=np.nan)
        recall = recall_score(rows.label, rows.pred, zero_division=np.nan)
        if abs(precision - recall) >= 0.25:
            expected.add((classifier, category))
    overall = {
        c
        for c, rows in p.groupby("classifier")
        if abs(precision_score(rows.label, rows.pred) - recall_score(rows.label, rows.pred)) >= 0.25
    }
    expected |= {(c, "overall") for c in overall}
    assert expected, "the fixture has a conservative classifier"
    table = page(alpha_report).table("|precision − recall| ≥ 0.25 (all images)")
    assert {(row[0], row[1]) for row in table.rows()} == expected
    for row in table.rows():
        precision, recall, mostly = float(row[4]), float(row[5]), row[6]
        assert mostly == ("misses unsafe" if precision > recall else "flags safe")


# --- robustness -----------------------------------------------------------------------------


def test_robust_accuracy_by_corruption_severity_and_attack(
    alpha: Written, alpha_report: Path
) -> None:
    rob = results(alpha, "robustness.csv").set_index(
        ["classifier", "source", "perturbation", "severity"]
    )
    view = page(alpha_report)
    corruptions = view.table("Robust Accuracy by corruption and severity")
    value = corruptions.cell(("q16", "fog"), "real", "sev 3").split("\n")[0]
    assert value == f"{rob.loc[('q16', 'real', 'fog', 3), 'robust_accuracy']:.3f}"
    assert corruptions.cell(("nudenet", "fog"), "AI", "sev 5") != "—"
    attacks = view.table("Robust Accuracy by attack and budget")
    value = attacks.cell(("multiheaded", "pgd"), "AI", "ε 4/255").split("\n")[0]
    assert value == f"{rob.loc[('multiheaded', 'ai', 'pgd', 4), 'robust_accuracy']:.3f}"
    assert "nudenet" not in {row[0] for row in attacks.rows()}
    family = view.table(FAMILY_CAPTION)
    digital = rob.reset_index()
    digital = digital[
        (digital.classifier == "q16") & (digital.family == "digital") & (digital.source == "ai")
    ]
    cell = family.cell(("q16",), "digital", "AI")
    mean = cell.split("\n")[0]
    assert mean == f"{digital.robust_accuracy.mean():.3f}"
    # the family mean carries its interval from robustness_family.csv
    fam = results(alpha, "robustness_family.csv").set_index(["classifier", "family", "source"])
    row = fam.loc[("q16", "digital", "ai")]
    assert f"[{row.robust_accuracy_lo:.3f}, {row.robust_accuracy_hi:.3f}]" in cell, cell


def test_image_classifiers_have_no_drift_and_the_report_says_why(alpha_report: Path) -> None:
    view = page(alpha_report)
    assert "nudenet judges the image itself, with no embedding" in view.text
    drift = view.table("Mean cosine, clean vs corrupted embedding")
    assert "nudenet" not in {row[0] for row in drift.rows()}
    assert {"q16", "probe-all"} <= {row[0] for row in drift.rows()}


def test_an_effectiveness_only_run_says_it_has_no_robustness(beta: Written, tmp_path: Path) -> None:
    index = render_report([beta.root], tmp_path / "beta-report")
    view = page(index)
    assert "No robustness results in beta (an effectiveness-only run)." in view.text
    assert not any(t.caption.startswith("Robust Accuracy") for t in view.tables)
    assert not list((index.parent / "figures").glob("robustness*"))


# --- shift, skipped -------------------------------------------------------------------------


def test_shift_table_shows_shift_csv(alpha: Written, alpha_report: Path) -> None:
    shift = results(alpha, "shift.csv").set_index(["category", "metric"])
    table = page(alpha_report).table("Real vs AI-generated: Fréchet distance and MMD² per category")
    for category in ("Hate", "overall"):
        frechet = shift.loc[(category, "frechet")]
        value, interval = table.cell((category,), "Fréchet").split("\n")
        assert value == f"{frechet['value']:.3f}"
        assert interval == f"[{frechet['lo']:.3f}, {frechet['hi']:.3f}]"
        assert (
            table.cell((category,), "MMD²").split("\n")[0]
            == f"{shift.loc[(category, 'mmd'), 'value']:.4f}"
        )
        assert (
            table.cell((category,), "n real")
            == f"{int(shift.loc[(category, 'frechet'), 'n_real']):,}"
        )


def test_skipped_counts_by_reason(alpha: Written, alpha_report: Path) -> None:
    table = page(alpha_report).table("Skipped rows by stage and reason")
    counts = alpha.skipped.groupby(["stage", "reason"]).size()
    shown = {(row[0], row[1]): row[2] for row in table.rows()}
    for (stage, reason), n in counts.items():
        assert shown[(stage, reason)] == str(n)
    assert shown[("all", "total")] == str(len(alpha.skipped))


# --- errors, CLI, stage ---------------------------------------------------------------------


def test_a_run_without_results_is_refused_with_the_fix(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").mkdir()
    result = cli("report", tmp_path / "empty")
    assert result.exit_code == 1
    assert "holds no results" in result.output and "ubsafe reduce" in result.output


def test_a_missing_column_is_named(alpha: Written, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(alpha.root / "results", broken / "results")
    eff = pd.read_csv(broken / "results" / "effectiveness.csv").drop(columns=["f1_lo"])
    eff.to_csv(broken / "results" / "effectiveness.csv", index=False)
    with pytest.raises(ReportError, match=r"effectiveness\.csv: missing column\(s\) f1_lo"):
        render_report([broken])


def test_report_stage_is_done_only_for_current_results(beta: Written, tmp_path: Path) -> None:
    from ubsafe.config import RunConfig
    from ubsafe.rundir import open_run
    from ubsafe.stages import STAGES
    from ubsafe.stages import report as stage

    root = tmp_path / "run"
    run = open_run(root, RunConfig(out=str(root), target="effectiveness", classifiers=()))
    shutil.copytree(beta.root / "results", root / "results")
    assert stage.NAME == "report" and stage.SHARDED is False and stage.applies(run)
    assert STAGES["report"].missing(run) == [0]
    stage.run_shard(run, 0)
    assert (root / "report" / "index.html").is_file() and stage.is_done(run, 0)
    gaps = pd.read_csv(root / "results" / "gaps.csv")
    gaps.loc[0, "p_value"] = 0.5
    gaps.to_csv(root / "results" / "gaps.csv", index=False)
    assert not stage.is_done(run, 0), "a re-reduced run needs a new report"
    embed_only = open_run(
        tmp_path / "embed", RunConfig(out=str(tmp_path / "embed"), target="embed")
    )
    assert not stage.applies(embed_only)
