"""A generic manifest over image files: CSV, JSONL or Parquet.

Columns: `path` (relative to the manifest's folder; absolute, or outside that folder, only under an
allowed `image_roots` folder), `category`, `source`, optional `label` (0/1 or Safe/Unsafe; without
the column the dataset is unlabelled: classifiers judge it, tables that need ground truth are
skipped), optional `split` (default `test`), optional `sample_id` (default: the path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ubsafe.data.dataset import image_hash, suggest
from ubsafe.data.files import (
    DEFAULT_LIMITS,
    PathRefused,
    ReadLimits,
    confine,
    oversize_hash,
    read_image_file,
)
from ubsafe.data.issues import Issue, missing_columns
from ubsafe.data.unsafebench import open_parquet
from ubsafe.taxonomy import NO_LABEL, SAFETY_LABELS

REQUIRED = ("path", "category", "source")
LABELS = {"0": 0, "1": 1, **SAFETY_LABELS}


def looks_like(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".csv", ".jsonl", ".parquet")


def _load(path: Path) -> tuple[pd.DataFrame | None, list[str], list[Issue]]:
    """The manifest's rows, where each is (Parquet row, CSV/JSONL line), and the issues."""
    name = path.name
    if path.stat().st_size == 0:
        return (
            None,
            [],
            [Issue("empty-file", name, "file is empty (0 bytes)", "write the manifest rows")],
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pf, issues = open_parquet(path, name)
        if pf is None:
            return None, [], issues
        frame = pf.read().to_pandas()
        return frame, [f"{name}:row {i}" for i in range(len(frame))], issues
    if suffix == ".jsonl":
        rows = []
        wheres = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                where = f"{name}:line {number}"
                return (
                    None,
                    [],
                    [Issue("not-json", where, f"is not valid JSON ({exc.msg})", "fix that line")],
                )
            if not isinstance(value, dict):
                where = f"{name}:line {number}"
                return (
                    None,
                    [],
                    [Issue("not-json", where, "is not a JSON object", "one object per line")],
                )
            rows.append(value)
            wheres.append(f"{name}:line {number}")
        return pd.DataFrame.from_records(rows), wheres, []
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        return (
            None,
            [],
            [Issue("not-csv", name, f"is not a readable CSV file ({exc})", "save it as UTF-8 CSV")],
        )
    return frame, [f"{name}:line {i + 2}" for i in range(len(frame))], []


def read(
    path: Path, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[pd.DataFrame | None, list[Issue], list[str]]:
    frame, wheres, issues = _load(path)
    if frame is None:
        return None, issues, []
    missing = missing_columns(
        path.name,
        REQUIRED,
        frame.columns,
        "a manifest needs path, category, source (optionally label, split, sample_id)",
    )
    if missing:
        return None, [missing], []
    root = path.parent
    labelled = "label" in frame.columns
    records = []
    for where, row in zip(wheres, frame.to_dict("records"), strict=True):
        rel = row["path"]
        if not isinstance(rel, str) or not rel.strip():
            issues.append(
                Issue("image-missing", where, "path is empty", "give the image file's path")
            )
            rel = ""
        label = _label(row["label"], where, issues) if labelled else NO_LABEL
        digest = _image_digest(root, rel, where, issues, limits) if rel else ""
        sample_id = row.get("sample_id")
        if (
            sample_id is None
            or (isinstance(sample_id, float) and sample_id != sample_id)
            or sample_id == ""
        ):
            sample_id = Path(rel).as_posix()
        split = row.get("split")
        records.append(
            {
                "sample_id": str(sample_id),
                "label": label,
                "category": "" if row["category"] is None else str(row["category"]),
                "source": "" if row["source"] is None else str(row["source"]),
                "split": "test" if split is None or split == "" or split != split else str(split),
                "file": rel,
                "row": -1,
                "image_hash": digest,
                "where": where,
            }
        )
    return pd.DataFrame.from_records(records), issues, []


def _label(value: object, where: str, issues: list[Issue]) -> int:
    if value is None or (isinstance(value, float) and value != value):
        issues.append(
            Issue("label", where, "label is empty (NaN)", "set label to 0/1 or Safe/Unsafe")
        )
        return -1
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    key = str(value)
    if key not in LABELS:
        issues.append(
            Issue(
                "label",
                where,
                f"label {value!r} is not one of 0/1/Safe/Unsafe",
                suggest(key, tuple(LABELS)),
            )
        )
        return -1
    return LABELS[key]


def _image_digest(root: Path, rel: str, where: str, issues: list[Issue], limits: ReadLimits) -> str:
    """The image's content hash ('' when it cannot be read); a file over the size limit is not
    read: it is planned and then skipped with its size as the reason."""
    try:
        file = confine(root, rel, limits)
    except PathRefused as exc:
        issues.append(Issue("image-outside", where, exc.message, exc.fix))
        return ""
    if not file.is_file():
        issues.append(
            Issue(
                "image-missing",
                where,
                f"image {rel!r} does not exist ({file})",
                "fix the path (relative to the manifest)",
            )
        )
        return ""
    size = file.stat().st_size
    if limits.too_large(size):
        return oversize_hash(size)
    data, reason = read_image_file(file, limits)
    if data is None:
        issues.append(
            Issue("image-unreadable", where, f"image {rel!r}: {reason}", "fix its permissions")
        )
        return ""
    return image_hash(data)
