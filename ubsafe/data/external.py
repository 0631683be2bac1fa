"""The external evaluation sets' layout (SMID, NSFWDataset, ...; reference/unsafebench.md §5).

Parquet files (under `data/` or at the root) with a base64-encoded `image` column and `label`
0 safe / 1 unsafe. There is no category or source column: both are the dataset's directory name, and
the source counts as `real` unless the run config's `source_map` says otherwise. The split comes
from
the file name (`train-*`, `test-*`; anything else is `test`).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ubsafe.data.dataset import image_hash
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


def read(root: Path) -> tuple[pd.DataFrame | None, list[Issue], list[str]]:
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
        table = pf.read(columns=list(REQUIRED))
        for i, (image, label) in enumerate(
            zip(table.column("image").to_pylist(), table.column("label").to_pylist(), strict=True)
        ):
            where = f"{rel}:row {i}"
            data = decode_base64(image)
            if data is None:
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
                    "image_hash": image_hash(data) if data else "",
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
