"""An honest demo and quiet logs: the demo says what its data and encoder are and what the results
show, on one screen; the terminal gets one line per stage while the shard logs keep the details
(libraries' INFO included); skipped.csv holds only rows that could not be scored, and
`ubsafe status` shows the images an embed run skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import simple_rows, write_unsafebench

SCREEN = 60


def ubsafe_shell(
    *args: object, cwd: Path, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`ubsafe ...` as a user's shell runs it (not a terminal: no progress bars)."""
    env = {**os.environ, "UBSAFE_PROGRESS": "0"}
    env.pop("UBSAFE_VERBOSITY", None)
    return subprocess.run(
        [sys.executable, "-m", "ubsafe", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def assert_honest_summary(text: str) -> None:
    assert "procedural demo set" in text
    assert "untrained weights" in text and "say nothing about any real classifier" in text
    assert "Largest real-vs-AI F1 gap:" in text and "p = " in text


@pytest.mark.slow
def test_demo_fits_on_one_screen_and_says_what_it_is(tmp_path: Path) -> None:
    """The default demo (every stage), on fewer images: its whole terminal output."""
    done = ubsafe_shell("demo", "--n", 66, "--out", "run", "--data", "data", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= SCREEN, "\n".join(lines)
    assert_honest_summary(done.stdout)
    assert "Weakest corruption:" in done.stdout and "Weakest attack:" in done.stdout
    # one progress line per stage, no library chatter, one format
    progress = [line for line in done.stderr.splitlines() if "ubsafe.progress:" in line]
    stages = [line.split("ubsafe.progress: ")[1].split()[0] for line in progress]
    robustness = ["embed", "perturb", "fit", "score", "attack", "compare", "reduce"]
    mitigation = ["generate", "embed", "score", "detect", "gather", "reduce"]
    assert stages == robustness + mitigation
    assert "INFO root" not in done.stderr and "job None" not in done.stderr
    # the details are in the shard logs, libraries' records included
    log = (tmp_path / "run" / "logs" / "embed" / "shard-00000.log").read_text()
    assert "INFO root: Parsing model identifier" in log
    assert "(local, host" in log and "NUMBA_NUM_THREADS=-" not in log
    html = (tmp_path / "run" / "report" / "index.html").read_text()
    head = html[: html.index("<h2")]
    assert "Read this first." in head and "procedural demo set" in head
    assert "In short: Largest real-vs-AI F1 gap:" in head


def test_effectiveness_demo_output_is_short_and_honest(tmp_path: Path) -> None:
    done = ubsafe_shell(
        "demo", "--n", 44, "--target", "effectiveness", "--out", "run", "--data", "data",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= SCREEN - 20, "\n".join(lines)
    assert_honest_summary(done.stdout)
    assert [line for line in done.stderr.splitlines() if " INFO " in line] == [
        line for line in done.stderr.splitlines() if "INFO ubsafe.progress: " in line
    ]
    summary = json.loads((tmp_path / "run" / "results" / "summary.json").read_text())
    assert len(summary["caveats"]) == 2


def test_the_mitigation_demo_alone_runs_the_generators_into_out(tmp_path: Path) -> None:
    done = ubsafe_shell("demo", "--target", "mitigation", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Mitigation demo: 12 built-in prompts" in done.stdout
    markdown = (tmp_path / "run" / "report" / "report.md").read_text(encoding="utf-8")
    assert "Read this first. The generators 'tiny-sd'" in markdown
    assert "## Mitigations" in markdown and "## Effectiveness" not in markdown
    assert not (tmp_path / "run-mitigation").exists()


def test_verbose_flag_shows_info_records(demo_dir: Path, tmp_path: Path) -> None:
    quiet = ubsafe_shell("plan", demo_dir, "--out", "a", cwd=tmp_path)
    loud = ubsafe_shell("-v", "plan", demo_dir, "--out", "b", cwd=tmp_path)
    assert quiet.returncode == loud.returncode == 0
    assert "INFO ubsafe.stages.plan: planned" not in quiet.stderr
    assert "INFO ubsafe.stages.plan: planned" in loud.stderr


def test_no_caveat_for_real_data(tmp_path: Path) -> None:
    from ubsafe.config import build_config
    from ubsafe.findings import caveats

    data = write_unsafebench(tmp_path / "ub", {"test": simple_rows(4)})
    assert caveats(build_config(dataset=data, flags={"encoder": "vit-l-14-openai"})) == []
    assert len(caveats(build_config(dataset=data, flags={"encoder": "tiny"}))) == 1


def test_a_mitigation_run_is_told_its_generators_are_random(tmp_path: Path) -> None:
    from ubsafe.config import build_config
    from ubsafe.findings import caveats

    def told(generators: tuple[str, ...], encoder: str) -> list[str]:
        flags = {
            "target": "mitigation",
            "generators": generators,
            "classifiers": ("nudenet",),
            "encoder": encoder,
        }
        return caveats(build_config(dataset="builtin:demo", flags=flags))

    tiny = told(("tiny-sd", "tiny-sld-max"), "tiny")
    assert len(tiny) == 2, tiny  # NudeNet reads no embeddings: no word on the unused encoder
    assert "'tiny-sd', 'tiny-sld-max' are tiny models" in tiny[0]
    assert "one draw of a random process" in tiny[1]
    real = told(("sd-1.4",), "vit-l-14-openai")
    assert len(real) == 1 and "one draw of a random process" in real[0]


@pytest.fixture(scope="module")
def broken_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 train and 16 test rows; one image of each split cannot be decoded."""
    root = tmp_path_factory.mktemp("broken")
    train, test = simple_rows(24, 1), simple_rows(16, 2)
    train[3]["image"] = {"bytes": b"not an image", "path": "broken-train.png"}
    test[5]["image"] = {"bytes": b"\x89PNG\r\n\x1a\n truncated", "path": "broken-test.png"}
    data = write_unsafebench(root / "data", {"train": train, "test": test})
    (data / "ubsafe.toml").write_text(
        'encoder = "tiny"\nclassifiers = ["probe-all", "nudenet"]\nshard_size = 16\n'
        "bootstrap = 200\n"
    )
    return data


def test_status_of_an_embed_run_names_the_skipped_images(
    broken_data: Path, tmp_path: Path, cli
) -> None:
    run = tmp_path / "embed-run"
    assert cli("run", "embed", broken_data, "--out", run).exit_code == 0
    status = cli("status", run)
    assert status.exit_code == 0, status.output
    assert "skipped 2 image(s) that could not be embedded (tiny" in status.output
    assert "1  not-an-image: " in status.output
    assert "1  corrupt: " in status.output
    document = json.loads(cli("status", run, "--json").output)
    assert sum(document["skipped_images"]["tiny"].values()) == 2


def test_skipped_csv_holds_only_rows_that_could_not_be_scored(
    broken_data: Path, tmp_path: Path, cli
) -> None:
    run = tmp_path / "run"
    result = cli("run", "effectiveness", broken_data, "--out", run)
    assert result.exit_code == 0, result.output
    results = run / "results"
    plan = pd.read_parquet(run / "plan.parquet")
    skipped = pd.read_csv(results / "skipped.csv")
    unscored = pd.read_csv(results / "unscored.csv")
    predicted = set(pd.read_parquet(results / "predictions.parquet")["sample_id"])
    broken = set(
        plan.loc[plan["row"].isin([3, 5]) & plan["file"].str.contains("test|train"), "sample_id"]
    )
    # the undecodable test image could not be scored; the train rows were never meant to be
    assert set(skipped["sample_id"]) <= broken and len(skipped) >= 1
    assert not skipped["reason"].str.contains("train split").any()
    train = set(plan.loc[plan["split"] == "train", "sample_id"])
    assert train - predicted - set(skipped["sample_id"]) <= set(unscored["sample_id"])
    assert unscored["reason"].str.contains("train split|no configured classifier covers").all()
    assert len(unscored) > 10
    # every row is exactly one of: predicted, skipped, unscored
    sets = [predicted, set(skipped["sample_id"]), set(unscored["sample_id"])]
    assert set().union(*sets) == set(plan["sample_id"])
    assert sum(len(s) for s in sets) == len(plan)
