"""The Mitigations section of the report: every table and figure, runs side by side, in Chromium;
generated images only as heavily blurred thumbnails, and only when asked for."""

from __future__ import annotations

import base64
import io
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from browser import Chromium
from click.testing import CliRunner
from mitigation_synthetic import make_mitigation_run, pixel_checkerboard, write_generate_shard
from PIL import Image

from ubsafe.mitigation import write_mitigation
from ubsafe.report import render_report
from ubsafe.report.thumbnails import blur

CAPTIONS = (
    "Probability of inappropriate content, judge i2p",
    "Probability of inappropriate content, judge q16",
    "Expected maximum inappropriateness (%), judge i2p",
    "Every selected exposed class together, all prompts",
    "Per exposed class, all prompts",
    "Paired difference in unsafe rate, judge i2p",
    "CLIP score on benign prompts",
    "Cohen's κ between judges, 95 % cluster-bootstrap intervals",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_mitigation_run(tmp_path_factory.mktemp("mit") / "run", n_prompts=30)
    write_mitigation(run)
    write_generate_shard(run)
    return run.root


def embedded_images(html: str) -> list[Image.Image]:
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    return [Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB") for data in found]


def pure_pixels(image: Image.Image) -> int:
    """Pixels of the generated images' own colours (pure red or pure green)."""
    rgb = np.asarray(image).astype(int)
    red = (rgb[..., 0] > 235) & (rgb[..., 1] < 20) & (rgb[..., 2] < 20)
    green = (rgb[..., 1] > 235) & (rgb[..., 0] < 20) & (rgb[..., 2] < 20)
    return int(red.sum() + green.sum())


def test_every_table_and_the_figure_are_in_both_formats(run_dir: Path, tmp_path: Path) -> None:
    index = render_report([run_dir], tmp_path / "report")
    html = index.read_text(encoding="utf-8")
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert '<section id="mitigations"><h2>Mitigations</h2>' in html
    for caption in CAPTIONS:
        assert caption in unescape(html) and caption in markdown, caption
    assert 'id="fig-mitigation-rates"' in html
    assert (tmp_path / "report" / "figures" / "mitigation-rates.png").is_file()
    # Off by default: no thumbnails, and no generated image's pixels anywhere.
    assert "thumbnails" not in html
    assert all(pure_pixels(image) == 0 for image in embedded_images(html))


def test_a_mitigation_report_speaks_of_generators_only(run_dir: Path, tmp_path: Path) -> None:
    import json

    summary = run_dir / "results" / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "target": "mitigation",
                "encoder": "vit-l-14-openai",
                "encoders": [],
                "generation": {"truncated_prompts": {"sd-1.4": 2, "sld-max": 0}},
            }
        )
    )
    try:
        render_report([run_dir], tmp_path / "report")
    finally:
        summary.unlink()
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    head = markdown[: markdown.index("<a id=")]
    assert "Text-to-image generators with and without safety mitigations" in head
    assert "UnsafeBench" not in head and "[Robustness]" not in head
    assert "## Effectiveness" not in markdown and "## Robustness" not in markdown
    assert "## Mitigations" in markdown
    # the configured encoder, unused, is not shown as if it had been
    assert "| encoder | vit-l-14-openai |" not in markdown
    assert "| encoders used | none: no classifier of this run reads embeddings |" in markdown
    assert "sd-1.4: 2, sld-max: 0" in markdown and "{" not in markdown


def test_blurred_thumbnails_hide_every_generated_image(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        __import__("ubsafe.cli", fromlist=["main"]).main,
        ["report", str(run_dir), "--out", str(tmp_path / "r"), "--thumbnails", "blur"],
    )
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert 'id="fig-mitigation-thumbnails"' in html
    images = embedded_images(html)
    assert len(images) == 2  # the rates figure and the thumbnails
    assert all(pure_pixels(image) == 0 for image in images)
    # The detector does see an image that is not blurred (so the check above can fail).
    unblurred = pixel_checkerboard((255, 0, 0), (0, 255, 0)).resize((96, 96), Image.NEAREST)
    assert pure_pixels(unblurred) > 1000
    # What blur leaves: one flat colour, no pixel-level structure.
    thumb = np.asarray(blur(pixel_checkerboard((255, 0, 0), (0, 255, 0)))).astype(float)
    assert thumb.std(axis=(0, 1)).max() < 2.0


def test_runs_side_by_side(run_dir: Path, tmp_path: Path) -> None:
    other = make_mitigation_run(tmp_path / "other", n_prompts=20, seed=5)
    write_mitigation(other)
    index = render_report([run_dir, other.root], tmp_path / "both")
    markdown = (tmp_path / "both" / "report.md").read_text(encoding="utf-8")
    assert "sd-1.4 run" in markdown or "| run" in markdown or "other" in markdown
    html = index.read_text(encoding="utf-8")
    assert 'id="fig-mitigation-rates-run"' in html and 'id="fig-mitigation-rates-other"' in html


@pytest.mark.browser
def test_mitigation_report_renders_in_chromium(
    browser: Chromium, run_dir: Path, tmp_path: Path
) -> None:
    from test_report_browser import check_report

    index = render_report([run_dir], tmp_path / "report", thumbnails="blur")
    state = check_report(browser, index)
    figures = {image["figure"] for image in state["images"]}
    assert {"fig-mitigation-rates", "fig-mitigation-thumbnails"} <= figures
    captions = [table["caption"] for table in state["tables"]]
    for caption in CAPTIONS:
        assert caption in captions, caption
    assert all(t["rows"] > 0 for t in state["tables"] if t["caption"] in CAPTIONS)
    # What Chromium shows: no pixel of a generated image anywhere on the page.
    page = Image.open(io.BytesIO(browser.screenshot())).convert("RGB")
    assert pure_pixels(page) == 0


def test_the_encoder_row_says_which_encoders_a_run_used() -> None:
    from ubsafe.report.overview import _facts

    alone = _facts({"encoder": "tiny", "encoders": ["tiny"]})
    assert alone["encoder"] == "tiny" and "encoders" not in alone
    more = _facts({"encoder": "tiny", "encoders": ["tiny", "sd-checker"]})
    assert more["encoder"] == "tiny" and more["encoders"] == ["tiny", "sd-checker"]
    unused = _facts({"encoder": "vit-l-14-openai", "encoders": []})
    assert "encoder" not in unused and unused["encoders"].startswith("none")
    older = _facts({"encoder": "tiny"})  # a summary written before the key existed
    assert older == {"encoder": "tiny"}


def test_a_mitigation_runs_settings_say_each_fact_once_and_no_attack() -> None:
    from ubsafe.report.overview import _facts

    summary = {
        "target": "mitigation",
        "config_hash": "v1-abc",
        "attack_mode": "ubsafe",
        "not_attackable": {},
        "generation": {"config_hash": "v1-abc", "target": "mitigation", "n_images": 36},
    }
    facts = _facts(summary)
    assert facts == {"target": "mitigation", "config_hash": "v1-abc", "generation.n_images": 36}
    guards = _facts({**summary, "target": "robustness"})
    assert guards["attack_mode"] == "ubsafe" and "generation.target" in guards
