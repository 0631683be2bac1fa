"""Per-shard Parquet outputs whose metadata says what they are, written atomically.

A stage's shard file counts as done only when its metadata matches what the run expects (stage,
shard, config hash, planned rows), so a file from another config or a killed writer never passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ubsafe import atomic

if TYPE_CHECKING:
    from ubsafe.rundir import Run

PREFIX = "ubsafe."


def stage_meta(run: Run, stage: str, shard: int) -> dict[str, str]:
    return {
        "stage": stage,
        "shard": str(shard),
        "config_hash": run.config.config_hash(),
        "fingerprint": run.dataset_fingerprint,
    }


def write(path: Path, frame: pd.DataFrame, meta: dict[str, str]) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    encoded = {f"{PREFIX}{k}".encode(): str(v).encode() for k, v in meta.items()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **encoded})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_meta(path: Path) -> dict[str, str] | None:
    try:
        raw = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    return {
        k.decode()[len(PREFIX) :]: v.decode()
        for k, v in raw.items()
        if k.startswith(PREFIX.encode())
    }


def problem(path: Path, expect: dict[str, str]) -> str | None:
    if not path.is_file():
        return "missing"
    meta = read_meta(path)
    if meta is None:
        return "unreadable"
    for key, value in expect.items():
        if meta.get(key) != value:
            return f"{key} is {meta.get(key)!r}, expected {value!r}"
    return None


def is_done(run: Run, stage: str, shard: int) -> bool:
    return problem(run.shard_path(stage, shard, "parquet"), stage_meta(run, stage, shard)) is None


def read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(path, columns=columns).to_pandas()


def meta_value(meta: dict[str, str] | None, key: str, default: Any = None) -> Any:
    return default if meta is None else meta.get(key, default)
