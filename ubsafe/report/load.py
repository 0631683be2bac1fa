"""Read the results of one or more runs: `results/` alone, checked column by column against the
schemas of `ubsafe.results`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ubsafe.results import RESULT_FILES

#: results file → the columns the report reads (its schema in `ubsafe.results`; more are fine).
RESULT_COLUMNS: dict[str, tuple[str, ...]] = {
    name: schema.names for name, schema in RESULT_FILES.items() if schema.reported
}
SUMMARY_FILE = "summary.json"
#: What the report reads, in a fixed order (their digest decides whether a report is current).
REPORT_INPUTS: tuple[str, ...] = (SUMMARY_FILE, *RESULT_COLUMNS)


class ReportError(Exception):
    """Results that cannot be reported; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class RunResults:
    """One run's results as the report sees them; a table is None when its file is absent."""

    label: str
    root: Path
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def get(self, name: str) -> pd.DataFrame | None:
        """The table read from `results/<name>.csv` (or .parquet), or None when the run has none."""
        return self.tables.get(name)


def results_dir(root: Path) -> Path:
    return root / "results"


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    from ubsafe.escape import csv_cell_value

    # Only empty cells and NaN spellings are missing; a sample id such as "NA" stays a string.
    frame = pd.read_csv(path, keep_default_na=False, na_values=["", "NaN", "nan"])
    for column in frame.columns:
        if pd.api.types.is_object_dtype(frame[column]) or pd.api.types.is_string_dtype(
            frame[column]
        ):
            frame[column] = frame[column].map(
                lambda v: csv_cell_value(v) if isinstance(v, str) else v
            )
    return frame


def _check_columns(path: Path, frame: pd.DataFrame, wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ReportError(
            f"{path}: missing column(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, frame.columns))}). "
            f"fix: reduce the run again with this ubsafe (`ubsafe reduce {path.parent.parent}`)"
        )


def read_summary(root: Path) -> dict[str, Any]:
    path = results_dir(root) / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReportError(
            f"{path} is not valid JSON ({exc}). fix: `ubsafe reduce {root}`"
        ) from None
    if not isinstance(data, dict):
        raise ReportError(
            f"{path} holds {type(data).__name__}, expected an object. fix: `ubsafe reduce {root}`"
        )
    return data


def load_results(root: str | os.PathLike[str], label: str | None = None) -> RunResults:
    """Read every results file of the run at `root` that exists; refuse a run with no results."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(
            f"{root}: no such run directory. fix: pass the folder that holds results/"
        )
    folder = results_dir(root)
    present = [name for name in REPORT_INPUTS if (folder / name).is_file()]
    if not present:
        raise ReportError(
            f"{folder} holds no results (looked for {', '.join(REPORT_INPUTS)}). "
            f"fix: finish the run, then `ubsafe reduce {root}`"
        )
    tables: dict[str, pd.DataFrame] = {}
    for filename, wanted in RESULT_COLUMNS.items():
        path = folder / filename
        if not path.is_file():
            continue
        try:
            frame = _read_table(path)
        except (OSError, ValueError) as exc:
            raise ReportError(
                f"{path} cannot be read ({exc}). fix: `ubsafe reduce {root}`"
            ) from None
        _check_columns(path, frame, wanted)
        tables[filename.split(".")[0]] = frame
    return RunResults(label or root.resolve().name, root, read_summary(root), tables)


def run_labels(roots: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Short unique names for runs: the folder name, with parent folders added until they differ."""
    parts = [Path(os.path.abspath(r)).parts for r in roots]
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    if len(set(labels)) < len(labels):  # the same folder given twice
        labels = [f"{label} ({i + 1})" for i, label in enumerate(labels)]
    return labels


def load_runs(roots: Sequence[str | os.PathLike[str]]) -> list[RunResults]:
    """Every run's results, labelled for side-by-side columns."""
    if not roots:
        raise ReportError("no run given. fix: `ubsafe report RUN [RUN...]`")
    return [load_results(root, label) for root, label in zip(roots, run_labels(roots), strict=True)]


def inputs_digest(root: str | os.PathLike[str]) -> str:
    """SHA-256 over the results files the report reads (names and bytes): a report is current when
    it was rendered from inputs with this digest."""
    digest = hashlib.sha256()
    folder = results_dir(Path(root))
    for name in REPORT_INPUTS:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


def slug(text: str) -> str:
    """A file-name-safe lower-case form of `text`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"
