"""The external evaluation sets' layout (SMID, NSFWDataset, ...: PerspectiveVision's test sets).

Parquet files (under `data/` or at the root) with a base64-encoded `image` column and `label`
0 safe / 1 unsafe. There is no category or source column: both are the dataset's directory name, and
the source counts as `real` unless the run config's `source_map` says otherwise. The split comes
from the file name (`train-*`, `test-*`; anything else is `test`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ubsafe.data.dataset import image_hash
from ubsafe.data.files import DEFAULT_LIMITS, ReadLimits, oversize_hash
from ubsafe.data.issues import Issue, missing_columns
from ubsafe.data.unsafebench import open_parquet

REQUIRED = ("image", "label")


def parquet_files(root: Path) -> list[Path]:
    data = root / "data"
    return sorted(data.glob("*.parquet")) if data.is_dir() else sorted(root.glob("*.parquet"))


def looks_like(root: Path) -> bool:
    files = parquet_files(root)
    if not files:
        return False
    try:
        schema = pq.read_schema(files[0])
    except Exception:
        return False
    return "image" in schema.names and pa.types.is_string(schema.field("image").type)


def split_of(path: Path) -> str:
    name = path.name
    return "train" if name.startswith("train") else "test"


def decode_base64(value: object) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def encoded_limit(limits: ReadLimits) -> int:
    """The longest base64 text whose decoded image stays within the size limit."""
    return (limits.max_image_bytes + 2) // 3 * 4


def oversize_reason(encoded_length: int, limits: ReadLimits) -> str:
    return limits.too_large(encoded_length * 3 // 4) or "too-large: the image is over the limit"


def _rows(pf: pq.ParquetFile, limits: ReadLimits) -> Iterator[tuple[str | None, object]]:
    """(content hash or None when the image is not valid base64, label) per row, one row group
    at a time; images over the size limit are never decoded (their stand-in hash is their size)."""
    longest = encoded_limit(limits)
    for group in range(pf.num_row_groups):
        table = pf.read_row_group(group, columns=list(REQUIRED))
        images = table.column("image").combine_chunks()
        lengths = pc.binary_length(images).to_pylist() if len(images) else []
        labels = table.column("label").to_pylist()
        for i, (length, label) in enumerate(zip(lengths, labels, strict=True)):
            if length is not None and length > longest:
                yield oversize_hash(length * 3 // 4), label
                continue
            data = decode_base64(images[i].as_py())
            yield (image_hash(data) if data else None), label
        del table, images


def read(
    root: Path, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[pd.DataFrame | None, list[Issue], list[str]]:
    name = root.name
    files = parquet_files(root)
    issues: list[Issue] = []
    records = []
    next_row = {"train": 0, "test": 0}
    for path in files:
        rel = path.relative_to(root).as_posix()
        pf, problems = open_parquet(path, rel)
        issues += problems
        if pf is None:
            continue
        missing = missing_columns(
            rel,
            REQUIRED,
            pf.schema_arrow.names,
            "external sets need a base64 `image` column and a 0/1 `label` column",
        )
        if missing:
            issues.append(missing)
            continue
        split = split_of(path)
        for i, (digest, label) in enumerate(_rows(pf, limits)):
            where = f"{rel}:row {i}"
            if digest is None:
                issues.append(
                    Issue(
                        "image", where, "image is not valid base64 (or empty)", "re-export the row"
                    )
                )
            if label not in (0, 1) or isinstance(label, bool):
                issues.append(
                    Issue(
                        "label",
                        where,
                        f"label {label!r} is not 0 (safe) or 1 (unsafe)",
                        "use 0 or 1",
                    )
                )
            records.append(
                {
                    "sample_id": f"{split}-{next_row[split] + i:05d}",
                    "label": label if label in (0, 1) else -1,
                    "category": name,
                    "source": name,
                    "split": split,
                    "file": rel,
                    "row": i,
                    "image_hash": digest or "",
                    "where": where,
                }
            )
        next_row[split] += pf.metadata.num_rows
    if not files:
        issues.append(Issue("no-files", str(root), "no Parquet files", "check the DATASET path"))
    if not records:
        return None, issues, []
    note = f"external set {name!r}: category and source are {name!r}"
    return pd.DataFrame.from_records(records), issues, [note]
