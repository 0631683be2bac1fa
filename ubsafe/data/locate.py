"""Fetch image bytes for planned samples, reading each Parquet row group at most once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ubsafe.data.external import decode_base64


def iter_image_bytes(root: Path, rows: pd.DataFrame) -> Iterator[tuple[str, bytes | None, str]]:
    """Yield (sample_id, bytes or None, reason) in the order of `rows` (sample_id, file, row)."""
    found: dict[str, tuple[bytes | None, str]] = {}
    in_parquet = rows[rows["row"] >= 0]
    for file, group in in_parquet.groupby("file", sort=True):
        found.update(_from_parquet(root / str(file), group))
    for sample_id, file, row in rows[["sample_id", "file", "row"]].itertuples(index=False):
        if row >= 0:
            data, reason = found[sample_id]
        else:
            data, reason = _from_file(root, str(file))
        yield str(sample_id), data, reason


def _from_file(root: Path, rel: str) -> tuple[bytes | None, str]:
    path = Path(rel) if Path(rel).is_absolute() else root / rel
    try:
        return path.read_bytes(), ""
    except OSError as exc:
        return None, f"unreadable: {path}: {exc}"


def _from_parquet(path: Path, group: pd.DataFrame) -> dict[str, tuple[bytes | None, str]]:
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        return {sid: (None, f"unreadable: {path}: {exc}") for sid in group["sample_id"]}
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rows = group["row"].to_numpy()
    which = np.searchsorted(starts, rows, side="right") - 1
    out: dict[str, tuple[bytes | None, str]] = {}
    for rg in np.unique(which):
        column = pf.read_row_group(int(rg), columns=["image"]).column("image")
        mask = which == rg
        for sample_id, row in zip(group["sample_id"].to_numpy()[mask], rows[mask], strict=True):
            value = column[int(row - starts[rg])].as_py()
            out[str(sample_id)] = _bytes_of(value)
    return out


def _bytes_of(value: object) -> tuple[bytes | None, str]:
    if isinstance(value, dict):
        data = value.get("bytes")
        return (
            (bytes(data), "") if data is not None else (None, "missing: the row has no image bytes")
        )
    if isinstance(value, str):
        data = decode_base64(value)
        return (data, "") if data else (None, "corrupt: invalid base64 image")
    return None, "missing: the row has no image"
