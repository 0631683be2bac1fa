"""`render_report`: results of one or more runs → index.html, report.md and figures/*.png."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ubsafe import atomic
from ubsafe.report.context import Context
from ubsafe.report.distribution import shift_section
from ubsafe.report.document import Document, to_html, to_markdown
from ubsafe.report.effectiveness import (
    effectiveness_section,
    gap_section,
    pairs_section,
    precision_recall_section,
)
from ubsafe.report.load import RunResults, inputs_digest, load_runs
from ubsafe.report.mitigation import mitigation_section
from ubsafe.report.notice import notice_paragraphs
from ubsafe.report.overview import generates, runs_section, skipped_section
from ubsafe.report.pooled import pooled_section
from ubsafe.report.robustness import robustness_section

#: Bump when the report's content changes for the same results (a current report is then redone).
REPORT_VERSION = 3
INPUTS_META = "ubsafe-inputs"
VERSION_META = "ubsafe-report-version"


#: Each section with the kinds of run it reports on: classifiers on a dataset (`guards`), or
#: generators judged on the images they made (`mitigation`). A section no run needs is left out.
BUILDERS = (
    (runs_section, ("guards", "mitigation")),
    (effectiveness_section, ("guards",)),
    (gap_section, ("guards",)),
    (precision_recall_section, ("guards",)),
    (pairs_section, ("guards",)),
    (pooled_section, ("guards",)),
    (robustness_section, ("guards",)),
    (shift_section, ("guards",)),
    (mitigation_section, ("mitigation",)),
    (skipped_section, ("guards", "mitigation")),
)
INTROS = {
    "guards": "Effectiveness and robustness of image safety classifiers on real-world and "
    "AI-generated images (the UnsafeBench protocol), read from each run's results/.",
    "mitigation": "Text-to-image generators with and without safety mitigations, judged by "
    "image safety classifiers on the images they made from a prompt benchmark (the I2P and "
    "SafeGen measures), read from each run's results/.",
}


def run_kinds(run: RunResults) -> set[str]:
    """`mitigation` for a run whose target generates images (or that has mitigation results),
    `guards` for any other: its target, or without a summary its tables, say which."""
    target = str(run.summary.get("target") or "")
    made_images = generates(run.summary)
    has_mitigation = run.get("mitigation") is not None
    kinds = set()
    if made_images or has_mitigation:
        kinds.add("mitigation")
    if not made_images and (target or not has_mitigation):
        kinds.add("guards")
    return kinds


def build_document(runs: list[RunResults], thumbnails: str = "off") -> Document:
    """The report of `runs` (side by side when there are several), as a document."""
    ctx = Context(runs, thumbnails)
    kinds = set().union(*(run_kinds(run) for run in runs))
    title = "ubsafe report: " + " vs ".join(ctx.labels)
    intro = [text for kind, text in INTROS.items() if kind in kinds]
    if ctx.several:
        intro.append(
            "Runs side by side: each column holds one sub-column per run, labelled by run name."
        )
    intro = notice_paragraphs(runs) + intro
    meta = {
        INPUTS_META: " ".join(inputs_digest(run.root) for run in runs),
        VERSION_META: str(REPORT_VERSION),
    }
    sections = [
        section
        for build, serves in BUILDERS
        if kinds & set(serves) and (section := build(ctx)) is not None
    ]
    return Document(title, intro, sections, meta)


def render_report(
    runs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    *,
    thumbnails: str = "off",
) -> Path:
    """Render the report of `runs` into `out` (default: the first run's report/); return index.html.

    Writes `figures/*.png`, `report.md` and last `index.html` (self-contained: figures embedded),
    each atomically; PNGs that an earlier report left in figures/ and this one lacks are removed.
    The same results give byte-identical files. Generated images of mitigation runs appear only
    with `thumbnails="blur"`, heavily blurred.
    """
    results = load_runs(runs)
    out_dir = Path(out) if out is not None else results[0].root / "report"
    doc = build_document(results, thumbnails)
    figures_dir = out_dir / "figures"
    names = set()
    for figure in doc.figures():
        atomic.write_bytes(figures_dir / f"{figure.name}.png", figure.png)
        names.add(f"{figure.name}.png")
    if figures_dir.is_dir():
        for stale in figures_dir.glob("*.png"):
            if stale.name not in names:
                stale.unlink()
    atomic.write_text(out_dir / "report.md", to_markdown(doc))
    return atomic.write_text(out_dir / "index.html", to_html(doc))


def rendered_inputs(index_html: Path) -> str | None:
    """The inputs digest a rendered index.html was made from (None when absent or unreadable)."""
    try:
        head = index_html.read_text(encoding="utf-8")[:4096]
    except (OSError, UnicodeDecodeError):
        return None
    version = re.search(rf'<meta name="{VERSION_META}" content="([^"]*)">', head)
    digest = re.search(rf'<meta name="{INPUTS_META}" content="([^"]*)">', head)
    if not version or not digest or version.group(1) != str(REPORT_VERSION):
        return None
    return digest.group(1)
