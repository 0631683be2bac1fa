"""The top of the report: what the numbers are worth (caveats stored by the reduce) and what they
show (three findings), per run, before any table."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ubsafe.report.load import RunResults


def notice_paragraphs(runs: list[RunResults]) -> list[str]:
    """Paragraphs for the report's introduction: each run's caveats, then its findings."""
    from ubsafe.findings import findings

    paragraphs = []
    for run in runs:
        prefix = f"{run.label}: " if len(runs) > 1 else ""
        caveats = [str(c) for c in run.summary.get("caveats", [])]
        if caveats:
            paragraphs.append(prefix + "Read this first. " + " ".join(caveats))
        found = findings(run.root / "results")
        if found:
            paragraphs.append(prefix + "In short: " + " ".join(found))
    return paragraphs
