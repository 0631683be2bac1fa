"""`ubsafe run mitigation` with the tiny generators, through the metrics and the report: the five
mitigation tables are written by the reduce, identical for 1, 3 and 18 shards and 1 or 2 Numba
threads, agree with the judged images, and the report renders them in Chromium with blurred
thumbnails only."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
import pytest
from browser import Chromium
from mitigation_fixtures import mitigation_args, run_ubsafe, write_prompts

from ubsafe.mitigation import MITIGATION_TABLES

IMAGES = 3  # per prompt and generator: 3 prompts × 2 generators × 3 = 18 images
RUNS = {"one": (18, "2"), "three": (6, "2"), "eighteen": (1, "1")}  # shard size, Numba threads


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from ubsafe.generate.tiny import ensure_tiny

    root = tmp_path_factory.mktemp("mitigation-metrics")
    weights = root / "weights"
    ensure_tiny(weights)
    prompts = write_prompts(root / "data")
    config = root / "metrics.toml"
    config.write_text('mitigation_baseline = "tiny-sd"\n', encoding="utf-8")
    out = {}
    for name, (shard_size, threads) in RUNS.items():
        out[name] = root / name
        args = mitigation_args(prompts, out[name], weights, "--shard-size", shard_size)
        args += ["--images-per-prompt", IMAGES, "--bootstrap", 2000, "--config", config]
        run_ubsafe("run", *args, NUMBA_NUM_THREADS=threads)
    return out


def test_tables_are_identical_for_any_shard_and_thread_count(runs: dict[str, Path]) -> None:
    plans = {name: pd.read_parquet(run / "plan.parquet") for name, run in runs.items()}
    assert {name: int(p["shard"].max()) + 1 for name, p in plans.items()} == {
        "one": 1,
        "three": 3,
        "eighteen": 18,
    }
    for table in MITIGATION_TABLES:
        texts = {(run / "results" / f"{table}.csv").read_bytes() for run in runs.values()}
        assert len(texts) == 1, table


def test_tables_agree_with_the_judged_images(runs: dict[str, Path]) -> None:
    results = runs["three"] / "results"
    generated = pd.read_parquet(results / "generated.parquet")
    table = pd.read_csv(results / "mitigation.csv")
    overall = table[table["category"] == "overall"].set_index(["generator", "judge"])
    for (generator, judge), rows in generated.groupby(["generator", "judge"]):
        row = overall.loc[(generator, judge)]
        assert row["n_images"] == len(rows) == 3 * IMAGES
        assert row["unsafe_rate"] == pytest.approx(rows["pred"].mean(), abs=1e-6)
    for category in ("Violence", "Hate"):
        mine = generated[generated["categories"].apply(lambda cats, c=category: c in cats)]
        assert set(table.loc[table["category"] == category, "n_images"]) == {
            len(mine) // generated["generator"].nunique() // generated["judge"].nunique()
        }
    nudity = pd.read_csv(results / "nudity.csv")
    assert set(nudity["baseline"]) == {"tiny-sd"}
    pairs = pd.read_csv(results / "mitigation_pairs.csv")
    assert set(zip(pairs["generator_a"], pairs["generator_b"], strict=True)) == {
        ("tiny-sd", "tiny-sld-max")
    }
    fidelity = pd.read_csv(results / "fidelity.csv")
    # only nudenet judges here: nothing embeds the run's encoder, and the note says so
    assert fidelity["note"].str.contains("no cached image embeddings").all()


@pytest.mark.browser
def test_report_of_a_tiny_run_renders_with_blurred_thumbnails_only(
    browser: Chromium, runs: dict[str, Path], tmp_path: Path
) -> None:
    from test_report_browser import check_report

    from ubsafe.report import render_report
    from ubsafe.report.thumbnails import GRID

    index = render_report([runs["three"]], tmp_path / "report", thumbnails="blur")
    html = index.read_text(encoding="utf-8")
    state = check_report(browser, index)
    figures = {image["figure"] for image in state["images"]}
    assert figures == {"fig-mitigation-rates", "fig-mitigation-thumbnails"}
    captions = [t["caption"] for t in state["tables"]]
    assert any(c.startswith("Probability of inappropriate content") for c in captions)
    assert "Paired difference in unsafe rate, judge nudenet" in captions
    # Every image in the page is one of the two figures: no generated image travels as it is.
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == 2
    originals = [
        image["bytes"]
        for path in sorted((runs["three"] / "shards" / "generate").glob("*.parquet"))
        for image in pd.read_parquet(path, columns=["image"])["image"]
    ]
    for data in embedded:
        raw = base64.b64decode(data)
        assert all(original not in raw for original in originals)
    assert GRID <= 8  # each thumbnail carries at most 8 × 8 pixels of its image
