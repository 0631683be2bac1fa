"""Reports: tables and figures from the results/ of one or more runs, as one self-contained HTML
page, Markdown and PNG files.

    render_report([run_a, run_b], out)  →  out/index.html, out/report.md, out/figures/*.png

`load` reads and checks results/, `tables` pivots them into wide tables, `figures` draws with
matplotlib, the section modules (`overview`, `effectiveness`, `robustness`, `distribution`) assemble
a `document.Document`, which `document` turns into HTML and Markdown.
"""

from __future__ import annotations

from ubsafe.report.load import ReportError
from ubsafe.report.render import render_report

__all__ = ["ReportError", "render_report"]
