"""Plan a run: validate the dataset, assign samples to shards, write `plan.parquet`.

Shards are cut from the samples sorted by `sample_id` — never by input row order — so the same
samples always give the same plan. Sorting by id also keeps a shard's images close together on disk
(UnsafeBench ids follow the Parquet rows), so a shard reads few row groups.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import ubsafe
from ubsafe import atomic
from ubsafe.config import ConfigError, RunConfig
from ubsafe.data.dataset import Dataset, open_dataset
from ubsafe.rundir import Run, open_run

log = logging.getLogger(__name__)

PLAN_COLUMNS = (
    "sample_id",
    "shard",
    "category",
    "source",
    "source_kind",
    "label",
    "split",
    "file",
    "row",
    "image_hash",
)


def assign_shards(table: pd.DataFrame, shard_size: int) -> pd.DataFrame:
    """The plan table: samples sorted by id, cut into shards of `shard_size`."""
    ordered = table.sort_values("sample_id", kind="stable").reset_index(drop=True)
    ordered["shard"] = (ordered.index // shard_size).astype("int32")
    return ordered[list(PLAN_COLUMNS)]


def write_plan(path: Path, plan: pd.DataFrame, dataset: Dataset, shard_size: int) -> None:
    n_shards = int(plan["shard"].max()) + 1 if len(plan) else 0
    table = pa.Table.from_pandas(plan, preserve_index=False)
    metadata = {
        b"ubsafe.n_shards": str(n_shards).encode(),
        b"ubsafe.shard_size": str(shard_size).encode(),
        b"ubsafe.fingerprint": dataset.fingerprint().encode(),
        b"ubsafe.format": dataset.format.encode(),
        b"ubsafe.version": ubsafe.__version__.encode(),
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def load_dataset(config: RunConfig) -> Dataset:
    from ubsafe.data.files import ReadLimits

    return open_dataset(
        config.dataset,
        fmt=config.dataset_format,
        source_map=config.source_map,
        limits=ReadLimits.from_config(config),
    )


def plan_run(config: RunConfig, *, dataset: Dataset | None = None) -> Run:
    """Validate the dataset, then create (or reopen) the run directory and write its plan.

    Nothing is written when the dataset is invalid. A relaunch on data whose content changed since
    the plan was written is refused.
    """
    dataset = dataset or load_dataset(config)
    check_needs(config, dataset)
    plan = assign_shards(dataset.table, config.shard_size)
    run = open_run(config.out, config)
    if run.plan_path.is_file():
        if run.dataset_fingerprint != dataset.fingerprint():
            raise ConfigError(
                f"{run.plan_path} was planned on different data (fingerprint "
                f"{run.dataset_fingerprint}, now {dataset.fingerprint()}): samples, labels or "
                "image "
                "bytes changed. fix: use a new --out directory for the new data"
            )
        return run
    write_plan(run.plan_path, plan, dataset, config.shard_size)
    log.info(
        "planned %d samples into %d shards of up to %d", len(plan), run.n_shards, config.shard_size
    )
    return run


def check_needs(config: RunConfig, dataset: Dataset) -> None:
    """Refuse before any job what cannot work on this data (fitted classifiers need train rows)."""
    from ubsafe.stages.preflight import check_dataset_needs

    check_dataset_needs(config, dataset)
