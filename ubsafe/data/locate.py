"""Fetch image bytes for planned samples, reading each Parquet row group at most once.

Image files are read only inside the dataset folder or an allowed `image_roots` folder, and no
image over the size limit is read or copied out of Arrow (`ubsafe.data.files`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ubsafe.data.external import decode_base64, encoded_limit, oversize_reason
from ubsafe.data.files import DEFAULT_LIMITS, PathRefused, ReadLimits, confine, read_image_file


def iter_image_bytes(
    root: Path, rows: pd.DataFrame, *, limits: ReadLimits = DEFAULT_LIMITS
) -> Iterator[tuple[str, bytes | None, str]]:
    """Yield (sample_id, bytes or None, reason) in the order of `rows` (sample_id, file, row).

    One Parquet row group's image column is held at a time (rows in file order, as sample ids
    are, read each row group once), and one image's bytes are copied out of it at a time.
    """
    groups = _RowGroups(root, limits)
    for sample_id, file, row in rows[["sample_id", "file", "row"]].itertuples(index=False):
        if row >= 0:
            data, reason = groups.image(str(file), int(row))
        else:
            data, reason = _from_file(root, str(file), limits)
        yield str(sample_id), data, reason


def _from_file(root: Path, rel: str, limits: ReadLimits) -> tuple[bytes | None, str]:
    try:
        path = confine(root, rel, limits)
    except PathRefused as exc:
        return None, f"refused: {exc.message}"
    return read_image_file(path, limits)


class _RowGroups:
    """The image column of the last row group read, per Parquet file of the dataset."""

    def __init__(self, root: Path, limits: ReadLimits):
        self.root = root
        self.limits = limits
        self.files: dict[str, tuple[pq.ParquetFile | None, np.ndarray, str]] = {}
        self.current: tuple[str, int, pa.Array] | None = None

    def _open(self, rel: str) -> tuple[pq.ParquetFile | None, np.ndarray, str]:
        if rel not in self.files:
            try:
                pf = pq.ParquetFile(confine(self.root, rel, self.limits))
            except PathRefused as exc:
                self.files[rel] = (None, np.zeros(1, np.int64), f"refused: {exc.message}")
            except Exception as exc:
                reason = f"unreadable: {rel}: {type(exc).__name__}"
                self.files[rel] = (None, np.zeros(1, np.int64), reason)
            else:
                sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
                self.files[rel] = (pf, np.concatenate([[0], np.cumsum(sizes)]), "")
        return self.files[rel]

    def image(self, rel: str, row: int) -> tuple[bytes | None, str]:
        pf, starts, reason = self._open(rel)
        if pf is None:
            return None, reason
        group = int(np.searchsorted(starts, row, side="right") - 1)
        if group >= pf.num_row_groups:
            return None, f"missing: {rel} has no row {row}"
        if self.current is None or self.current[:2] != (rel, group):
            self.current = None  # let the previous row group go before reading the next
            column = pf.read_row_group(group, columns=["image"]).column("image").combine_chunks()
            self.current = (rel, group, column)
        return _bytes_at(self.current[2], row - int(starts[group]), self.limits)


def _bytes_at(column: pa.Array, index: int, limits: ReadLimits) -> tuple[bytes | None, str]:
    """Row `index`'s image bytes; nothing over the size limit is copied out of Arrow."""
    if pa.types.is_struct(column.type):
        if not column[index].is_valid:
            return None, "missing: the row has no image"
        names = [column.type.field(i).name for i in range(column.type.num_fields)]
        if "bytes" not in names:
            return None, "missing: the row has no image bytes"
        data = column.field("bytes")
        length = pc.binary_length(data.slice(index, 1))[0].as_py()
        if length is None:
            return None, "missing: the row has no image bytes"
        reason = limits.too_large(length)
        return (None, reason) if reason else (bytes(data[index].as_py()), "")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        length = pc.binary_length(column.slice(index, 1))[0].as_py()
        if length is None:
            return None, "missing: the row has no image"
        if length > encoded_limit(limits):
            return None, oversize_reason(length, limits)
        decoded = decode_base64(column[index].as_py())
        return (decoded, "") if decoded else (None, "corrupt: invalid base64 image")
    return None, "missing: the row has no image"
