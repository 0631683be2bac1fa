"""What every section builder shares: the runs, their labels, classifier order, figure naming."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

from ubsafe.report.document import Figure
from ubsafe.report.figures import Png
from ubsafe.report.load import RunResults, slug
from ubsafe.report.tables import RUN, classifier_order


@dataclass
class Context:
    runs: list[RunResults]
    #: generated images in the report: `off`, or `blur` (heavily blurred thumbnails only)
    thumbnails: str = "off"

    @property
    def labels(self) -> list[str]:
        return [run.label for run in self.runs]

    @property
    def several(self) -> bool:
        return len(self.runs) > 1

    @cached_property
    def slugs(self) -> dict[str, str]:
        """A distinct file-name part per run label."""
        out: dict[str, str] = {}
        for label in self.labels:
            base = candidate = slug(label)
            i = 2
            while candidate in out.values():
                candidate, i = f"{base}-{i}", i + 1
            out[label] = candidate
        return out

    @cached_property
    def classifiers(self) -> list[str]:
        frames = [table for run in self.runs for table in run.tables.values()]
        return classifier_order(frames, [run.summary for run in self.runs])

    def with_table(self, name: str) -> Iterator[tuple[RunResults, pd.DataFrame]]:
        """(run, table) for the runs that have results/<name>."""
        for run in self.runs:
            table = run.get(name)
            if table is not None:
                yield run, table

    def without_table(self, name: str) -> list[RunResults]:
        return [run for run in self.runs if run.get(name) is None]

    def figure_name(self, section: str, run: RunResults | None = None) -> str:
        """`<section>` for a figure of all runs (or of the only run), else `<section>-<run>`."""
        return section if run is None or not self.several else f"{section}-{self.slugs[run.label]}"

    def figure(
        self, png: Png | None, section: str, caption: str, run: RunResults | None = None
    ) -> list[Figure]:
        """The figure block (an empty list when there was nothing to draw)."""
        if png is None:
            return []
        if run is not None and self.several:
            caption = f"{run.label}: {caption}"
        return [Figure(self.figure_name(section, run), png.data, caption, png.width, png.height)]

    def level_text(self) -> str:
        """`95 %` (or the levels of the runs, when they differ)."""
        levels = sorted({float(run.summary.get("ci_level", 0.95)) for run in self.runs})
        return " / ".join(f"{level * 100:g} %" for level in levels)

    def classifier_orders(self) -> dict[str, list[str]]:
        order = self.classifiers
        return {"classifier": order, "classifier_a": order, "classifier_b": order}


def records(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Table records (key columns, `run`, `cell`) as a frame."""
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[RUN, "cell"])
