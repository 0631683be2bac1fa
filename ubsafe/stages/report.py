"""Stage `report`: render the run's own report from its results/ (non-sharded, after reduce).

Done when `report/index.html` exists and was rendered, by this report version, from results files
with the same content as now: a reduce that changes any result makes the report stale again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ubsafe.stages import Needs

if TYPE_CHECKING:
    from ubsafe.rundir import Run

NAME = "report"
SHARDED = False
NEEDS = Needs(
    inputs=("results/",),
    outputs=("report/index.html", "report/report.md", "report/figures/"),
    kernels=True,
    after_success=True,
    follows="reduce",
)
log = logging.getLogger(__name__)


def applies(run: Run) -> bool:
    """Every target but `embed` produces results to report."""
    return run.config.target != "embed"


def is_done(run: Run, shard: int) -> bool:
    from ubsafe.report.load import inputs_digest
    from ubsafe.report.render import rendered_inputs

    return rendered_inputs(run.report_dir / "index.html") == inputs_digest(run.root)


def run_shard(run: Run, shard: int) -> None:
    from ubsafe.report import render_report

    path = render_report([run.root], run.report_dir)
    log.info("report: %s", path)
