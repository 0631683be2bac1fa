"""One reader interface over the three dataset layouts.

A `Dataset` is a validated table with one row per sample:

    sample_id  stable id (UnsafeBench: `<split>-<row:05d>`, the reference code's numbering)
    label      0 safe / 1 unsafe
    category   as the dataset spells it
    source     as the dataset spells it (`Laion5B`); `source_kind` is its mapping (`real` / `ai`)
    split      `train` or `test`
    file, row  where the image is: a Parquet file and row, or an image file (row = -1)
    image_hash short content hash of the image bytes (the dataset fingerprint is built from these)

plus `iter_images(table)`, which yields each sample's image bytes. Layouts:
`unsafebench` (published Parquet), `external` (base64 image column, label 0/1) and `manifest`
(CSV, JSONL or Parquet over image files). Every problem found while reading is collected and the
whole list is raised as one `DatasetError` before anything is planned.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from ubsafe.data.files import DEFAULT_LIMITS, ReadLimits
from ubsafe.data.issues import DatasetError, Issue
from ubsafe.taxonomy import CATEGORIES, DEFAULT_SOURCE_MAP, SPLITS

Format = Literal["unsafebench", "external", "manifest"]
TABLE_COLUMNS = (
    "sample_id",
    "label",
    "category",
    "source",
    "source_kind",
    "split",
    "file",
    "row",
    "image_hash",
)
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")


def image_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def suggest(value: str, choices: tuple[str, ...] | list[str]) -> str:
    """A fix hint for a value that is not one of `choices`."""
    stripped = value.strip()
    spaces = "strip the spaces and " if stripped != value else ""
    if stripped in choices:
        return f"strip the spaces: {stripped!r}"
    lowered = {c.lower(): c for c in choices}
    if stripped.lower() in lowered:
        return f"{spaces}use the exact spelling {lowered[stripped.lower()]!r}"
    close = difflib.get_close_matches(stripped, list(choices), n=1)
    if close:
        return f"did you mean {close[0]!r}? valid: {', '.join(choices)}"
    return f"use one of: {', '.join(choices)}"


@dataclass
class Dataset:
    """A validated dataset: its root, layout and sample table."""

    root: Path
    format: Format
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    limits: ReadLimits = DEFAULT_LIMITS

    def iter_images(self, rows: pd.DataFrame) -> Iterator[tuple[str, bytes | None, str]]:
        """Yield (sample_id, image bytes or None, reason when None) for `rows` of the table."""
        from ubsafe.data import locate

        yield from locate.iter_image_bytes(self.root, rows, limits=self.limits)

    @property
    def labelled(self) -> bool:
        """Whether the samples carry labels (a dataset without a label column has none)."""
        from ubsafe.taxonomy import NO_LABEL

        return not bool((self.table["label"] == NO_LABEL).any())

    def fingerprint(self) -> str:
        """A content fingerprint: identical for the same samples, labels and image bytes."""
        return table_fingerprint(self.table)


def table_fingerprint(table: pd.DataFrame) -> str:
    ordered = table.sort_values("sample_id", kind="stable")
    digest = hashlib.blake2b(digest_size=16)
    for values in ordered[
        ["sample_id", "label", "category", "source", "split", "image_hash"]
    ].itertuples(index=False):
        digest.update("\x1f".join(str(v) for v in values).encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def detect_format(path: Path) -> Format:
    """Tell the layout from what is on disk; the error says what each layout looks like."""
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return "manifest"
        raise DatasetError(
            str(path),
            [
                Issue(
                    "format",
                    str(path),
                    f"a file with suffix {path.suffix!r} is not a dataset",
                    "pass a manifest (.csv, .jsonl, .parquet) or a dataset directory",
                )
            ],
        )
    if not path.is_dir():
        raise DatasetError(
            str(path), [Issue("missing", str(path), "does not exist", "check the DATASET path")]
        )
    from ubsafe.data import external, unsafebench

    if unsafebench.looks_like(path):
        return "unsafebench"
    if external.looks_like(path):
        return "external"
    raise DatasetError(
        str(path),
        [
            Issue(
                "format",
                str(path),
                "no dataset layout recognised: expected data/train-*.parquet and "
                "data/test-*.parquet (UnsafeBench), Parquet files with a base64 `image` column "
                "(external evaluation set), or a manifest file",
                "point DATASET at the dataset root or the manifest, or pass --format",
            )
        ],
    )


def open_dataset(
    path: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    source_map: Mapping[str, str] | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> Dataset:
    """Read and validate a dataset; raise `DatasetError` listing every problem found.

    Image files are read only inside the dataset's folder or under `limits.image_roots`, and
    none over `limits.max_image_bytes` (`ubsafe.data.files`).
    """
    path = Path(path)
    chosen: Format = detect_format(path) if fmt == "auto" else fmt  # type: ignore[assignment]
    source_map = dict(DEFAULT_SOURCE_MAP if source_map is None else source_map)
    if chosen == "unsafebench":
        from ubsafe.data import unsafebench as reader
    elif chosen == "external":
        from ubsafe.data import external as reader  # type: ignore[no-redef]
    elif chosen == "manifest":
        from ubsafe.data import manifest as reader  # type: ignore[no-redef]
    else:
        raise DatasetError(
            str(path),
            [
                Issue(
                    "format",
                    str(path),
                    f"unknown format {fmt!r}",
                    "use auto, unsafebench, external or manifest",
                )
            ],
        )
    root = path if path.is_dir() else path.parent
    raw, issues, notes = reader.read(path, limits)
    if raw is not None and chosen == "external":
        for name in sorted(set(raw["source"]) - set(source_map)):
            source_map[name] = "real"
            notes.append(
                f"source {name!r} counts as real (map it with [source_map] in the run config)"
            )
    if raw is not None:
        issues += check_table(raw, source_map, check_categories=chosen != "external")
    if issues:
        raise DatasetError(str(path), issues)
    assert raw is not None
    table = finish_table(raw, source_map)
    return Dataset(root=root, format=chosen, table=table, notes=notes, limits=limits)


def _places(wheres: pd.Series) -> str:
    shown = ", ".join(wheres.head(3))
    return shown + (f" (and {len(wheres) - 3} more rows)" if len(wheres) > 3 else "")


def _bad_values(
    raw: pd.DataFrame, column: str, allowed: tuple[str, ...]
) -> list[tuple[str, str, int]]:
    """(value, where, count) for each distinct value of `column` not in `allowed`."""
    bad = raw.loc[~raw[column].isin(allowed), ["where", column]]
    return [
        (str(value), _places(group["where"]), len(group))
        for value, group in bad.groupby(column, sort=True)
    ]


def check_table(
    raw: pd.DataFrame, source_map: Mapping[str, str], *, check_categories: bool
) -> list[Issue]:
    """Checks shared by every layout; `raw` carries a `where` column for messages."""
    issues: list[Issue] = []
    if raw.empty:
        return [Issue("empty", "dataset", "contains no samples", "check that the files hold rows")]
    if check_categories:
        for value, where, _ in _bad_values(raw, "category", CATEGORIES):
            issues.append(
                Issue(
                    "category",
                    where,
                    f"category {value!r} is not an UnsafeBench category",
                    suggest(value, CATEGORIES),
                )
            )
    known = tuple(source_map)
    for value, where, _ in _bad_values(raw, "source", known):
        issues.append(
            Issue(
                "source",
                where,
                f"source {value!r} is not mapped to real/ai",
                suggest(value, known)
                + f'; or map it in the run config: [source_map] "{value}" = "real" (or "ai")',
            )
        )
    for value, where, _ in _bad_values(raw, "split", SPLITS):
        issues.append(
            Issue("split", where, f"split {value!r} is not train/test", suggest(value, SPLITS))
        )
    duplicated = raw[raw["sample_id"].duplicated(keep=False)]
    for sample_id, group in duplicated.groupby("sample_id", sort=True):
        issues.append(
            Issue(
                "duplicate-id",
                _places(group["where"]),
                f"sample_id {sample_id!r} appears {len(group)} times",
                "give every row a unique sample_id (or drop the duplicate rows)",
            )
        )
    return issues


def finish_table(raw: pd.DataFrame, source_map: Mapping[str, str]) -> pd.DataFrame:
    table = raw.drop(columns=["where"]).copy()
    table["label"] = table["label"].astype("int8")
    table["row"] = table["row"].astype("int64")
    table["source_kind"] = table["source"].map(source_map)
    table = table[list(TABLE_COLUMNS)]
    return table.sort_values("sample_id", kind="stable").reset_index(drop=True)
