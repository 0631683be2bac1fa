"""The report opened in headless Chromium: every image decodes at its size, every table has rows,
and screenshots of the page and of each figure are not blank."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from browser import HEIGHT, WIDTH, Chromium
from PIL import Image, ImageStat
from report_fixtures import write_results

from ubsafe.report import render_report

pytestmark = pytest.mark.browser

FIGURES = {
    "effectiveness",
    "gap",
    "precision-recall",
    "robustness-corruptions",
    "robustness-attacks",
    "drift",
    "shift",
    "projection",
}

STATE = """(async () => {
  const decoded = await Promise.all(Array.from(document.images).map(
      img => img.decode().then(() => true, () => false)));
  return {
    images: Array.from(document.images).map((img, i) => ({
      decoded: decoded[i], complete: img.complete, naturalWidth: img.naturalWidth,
      naturalHeight: img.naturalHeight, width: Number(img.getAttribute('width')),
      height: Number(img.getAttribute('height')), figure: img.closest('figure').id})),
    tables: Array.from(document.querySelectorAll('table')).map(t => ({
      caption: t.caption ? t.caption.textContent : '',
      rows: t.tBodies[0] ? t.tBodies[0].rows.length : 0,
      height: t.offsetHeight, width: t.offsetWidth})),
    external: Array.from(document.querySelectorAll('[src],[href]'))
      .map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
  };
})()"""

RECT = """(() => {
  const r = document.getElementById(%r).querySelector('img').getBoundingClientRect();
  return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};
})()"""


def not_blank(png: bytes) -> tuple[tuple[int, int], float, int]:
    """(size, grey-level standard deviation, number of colours) of a screenshot."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    return image.size, ImageStat.Stat(image.convert("L")).stddev[0], len(colours)


def check_report(browser: Chromium, index: Path) -> dict[str, Any]:
    """Open `index` and assert what a reader would notice; return the page state."""
    browser.open(index)
    state = browser.evaluate(STATE)
    assert state["external"] == [], "the page loads nothing from outside itself"
    assert state["images"], "the report has figures"
    for image in state["images"]:
        assert image["decoded"] and image["complete"] and image["naturalWidth"] > 0, image["figure"]
        assert (image["naturalWidth"], image["naturalHeight"]) == (
            image["width"],
            image["height"],
        ), image["figure"]
    assert state["tables"], "the report has tables"
    for table in state["tables"]:
        assert table["rows"] > 0 and table["height"] > 0 and table["width"] > 0, table["caption"]

    size, spread, colours = not_blank(browser.screenshot())
    assert size == (WIDTH, HEIGHT)
    assert spread > 5 and colours > 20, "the first screen shows content"
    for image in state["images"]:
        rect = browser.evaluate(RECT % image["figure"])
        size, spread, colours = not_blank(browser.screenshot(rect))
        assert size == (round(rect["width"]), round(rect["height"])), image["figure"]
        assert spread > 5 and colours > 8, f"{image['figure']} renders as a blank area"
    return dict(state)


def figure_names(state: dict[str, Any]) -> set[str]:
    return {image["figure"].removeprefix("fig-") for image in state["images"]}


def test_report_renders_every_table_and_figure(browser: Chromium, tmp_path: Path) -> None:
    written = write_results(tmp_path / "alpha")
    index = render_report([written.root])
    state = check_report(browser, index)
    assert figure_names(state) == FIGURES
    assert figure_names(state) == {p.stem for p in (index.parent / "figures").glob("*.png")}


def test_side_by_side_report_renders(browser: Chromium, tmp_path: Path) -> None:
    alpha = write_results(tmp_path / "alpha", seed=0)
    beta = write_results(tmp_path / "beta", seed=1, robustness=False)
    index = render_report([alpha.root, beta.root], tmp_path / "both")
    state = check_report(browser, index)
    per_run = {f"{name}-alpha" for name in FIGURES - {"shift"}} | {"shift"}
    per_run |= {"effectiveness-beta", "gap-beta", "precision-recall-beta", "projection-beta"}
    assert figure_names(state) == per_run


LAYOUT = """(() => {
  const wraps = Array.from(document.querySelectorAll('.table-wrap')).map(w => ({
    caption: w.querySelector('caption').textContent,
    scroll: w.scrollWidth, client: w.clientWidth}));
  const overall = Array.from(document.querySelectorAll('thead th'))
    .filter(th => th.textContent.trim() === 'overall')
    .map(th => {
      const r = th.getBoundingClientRect();
      return {caption: th.closest('table').caption.textContent, left: r.left, right: r.right,
              y: r.top + window.scrollY};
    });
  return {wraps: wraps, overall: overall, viewport: window.innerWidth};
})()"""


def test_every_table_fits_at_1280_px_with_overall_in_view(
    browser: Chromium, tmp_path: Path
) -> None:
    """At 1,280 px no table scrolls sideways, and the `overall` column of the F1 tables lies inside
    the viewport; a screenshot of the first F1 table is kept for a person to look at."""
    written = write_results(tmp_path / "alpha")
    index = render_report([written.root])
    browser.open(index)
    layout = browser.evaluate(LAYOUT)
    assert layout["viewport"] == WIDTH
    too_wide = [w for w in layout["wraps"] if w["scroll"] > w["client"]]
    assert too_wide == [], "tables that scroll sideways at 1,280 px"
    assert {o["caption"] for o in layout["overall"]} >= {
        "F1 on real-world images",
        "F1 on AI-generated images",
        "F1 on all images",
    }
    for column in layout["overall"]:
        assert 0 <= column["left"] < column["right"] <= WIDTH, column
    first = layout["overall"][0]
    png = browser.screenshot({"x": 0, "y": first["y"] - 40, "width": WIDTH, "height": 420})
    (tmp_path / "f1-table-1280.png").write_bytes(png)
    size, spread, colours = not_blank(png)
    assert size == (WIDTH, 420) and spread > 5 and colours > 8


PIPELINE = (
    "ubsafe.demo",
    "ubsafe.encoders",
    "ubsafe.classifiers",
    "ubsafe.perturb",
    "ubsafe.kernels",
    "ubsafe.stages.reduce",
    "ubsafe.stages.compare",
)


@pytest.mark.slow
def test_demo_run_report_renders(browser: Chromium, tmp_path: Path) -> None:
    """The must-show: the report of a real demo run (tiny encoder, probes, NudeNet, robustness)."""
    import importlib.util

    missing = [name for name in PIPELINE if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(
            f"the demo pipeline is not complete in this build (missing {', '.join(missing)})"
        )
    from ubsafe.demo import run_demo

    out = tmp_path / "demo"
    summary = run_demo(out=out, data_dir=tmp_path / "demo-data", n=264, target="all")
    index = out / "report" / "index.html"
    assert str(index) in summary, "the demo ends by naming the report"
    state = check_report(browser, index)
    assert figure_names(state) == FIGURES
