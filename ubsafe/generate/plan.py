"""Plan a mitigation run: prompts × generators × image index → images, cut into shards.

The prompt set is read and checked once (`ubsafe.prompts.open_prompts`) and stored in the run as
`prompts.parquet`, so workers never read the original file. Every image gets the sample id
`<generator>:<prompt_id>:<image_index>`; images are ordered by (generator, prompt_id, image index)
— stable ids, never file order — and cut into shards of `shard_size`. The generate stage writes
shard k's images, in plan order, to `shards/generate/shard-k.parquet`, which is where the plan's
`file`/`row` point, so the embed and score stages read generated images like any dataset's.

Plan rows of generated images carry category `generated` (every classifier judges them), source
the generator's name (kind `ai`), split `test` and no label (`NO_LABEL`: no ground truth).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import ubsafe
from ubsafe import atomic
from ubsafe.config import ConfigError, RunConfig
from ubsafe.rundir import Run, open_run, shard_name
from ubsafe.stages.plan import PLAN_COLUMNS as IMAGE_PLAN_COLUMNS
from ubsafe.taxonomy import NO_LABEL

if TYPE_CHECKING:
    from ubsafe.prompts import PromptSet

log = logging.getLogger(__name__)

PROMPTS_FILE = "prompts.parquet"
#: The plan category of generated images: every classifier of the run judges them.
GENERATED = "generated"
#: An image plan's columns, and what each generated image was made from.
PLAN_COLUMNS = (
    *IMAGE_PLAN_COLUMNS,
    "generator",
    "prompt_id",
    "image_index",
    "seed",
)


def sample_id(generator: str, prompt_id: str, image_index: int) -> str:
    return f"{generator}:{prompt_id}:{image_index}"


def generation_fingerprint(config: RunConfig, prompts_fingerprint: str) -> str:
    """What the generated images depend on: the prompts and the generation settings."""
    settings = {k: v for k, v in config.result_fields().items()}
    canonical = json.dumps([prompts_fingerprint, settings], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).hexdigest()


def image_plan(
    prompts: pd.DataFrame, generators: tuple[str, ...], images_per_prompt: int, shard_size: int
) -> pd.DataFrame:
    """One row per (generator, prompt, image index), sorted by those, cut into shards."""
    n_prompts = len(prompts)
    gen = np.repeat(np.array(generators, dtype=object), n_prompts * images_per_prompt)
    pid = np.tile(
        np.repeat(prompts["prompt_id"].to_numpy(object), images_per_prompt), len(generators)
    )
    seed = np.tile(
        np.repeat(prompts["seed"].to_numpy(np.int64), images_per_prompt), len(generators)
    )
    index = np.tile(np.arange(images_per_prompt, dtype=np.int32), n_prompts * len(generators))
    table = pd.DataFrame({"generator": gen, "prompt_id": pid, "image_index": index, "seed": seed})
    table = table.sort_values(["generator", "prompt_id", "image_index"], kind="stable")
    table = table.reset_index(drop=True)
    shard = (table.index // shard_size).astype("int32")
    table["shard"] = shard
    table["row"] = (table.index % shard_size).astype("int64")
    table["file"] = [f"shards/generate/{shard_name(int(s), 'parquet')}" for s in shard]
    table["sample_id"] = [
        sample_id(g, p, int(i))
        for g, p, i in zip(
            table["generator"], table["prompt_id"], table["image_index"], strict=True
        )
    ]
    table["category"] = GENERATED
    table["source"] = table["generator"]
    table["source_kind"] = "ai"
    table["label"] = np.int8(NO_LABEL)
    table["split"] = "test"
    table["image_hash"] = ""
    return table[list(PLAN_COLUMNS)]


def read_prompts(config: RunConfig) -> PromptSet:
    from ubsafe.prompts import open_prompts

    return open_prompts(config.dataset)


def plan_mitigation(config: RunConfig, *, prompts: PromptSet | None = None) -> Run:
    """Check the prompts, then create (or reopen) the run and write `prompts.parquet` and the
    plan. Nothing is written when the prompts are invalid; a relaunch on changed prompts is
    refused."""
    prompts = prompts or read_prompts(config)
    fingerprint = generation_fingerprint(config, prompts.fingerprint)
    run = open_run(config.out, config)
    if run.plan_path.is_file():
        if run.dataset_fingerprint != fingerprint:
            raise ConfigError(
                f"{run.plan_path} was planned on other prompts (or generation settings): "
                f"fingerprint {run.dataset_fingerprint}, now {fingerprint}. "
                "fix: use a new --out directory"
            )
        return run
    frame = prompts.frame.reset_index(drop=True)
    write_table(
        run.root / PROMPTS_FILE, frame, {b"ubsafe.fingerprint": prompts.fingerprint.encode()}
    )
    plan = image_plan(frame, config.generators, config.images_per_prompt, config.shard_size)
    n_shards = int(plan["shard"].max()) + 1 if len(plan) else 0
    write_table(
        run.plan_path,
        plan,
        {
            b"ubsafe.n_shards": str(n_shards).encode(),
            b"ubsafe.shard_size": str(config.shard_size).encode(),
            b"ubsafe.fingerprint": fingerprint.encode(),
            b"ubsafe.format": f"prompts-{prompts.kind}".encode(),
            b"ubsafe.images": b"run",
            b"ubsafe.version": ubsafe.__version__.encode(),
        },
    )
    log.info(
        "planned %d images (%d prompts × %d generators × %d) into %d shards",
        len(plan),
        len(frame),
        len(config.generators),
        config.images_per_prompt,
        n_shards,
    )
    return run


def write_table(path: Path, frame: pd.DataFrame, metadata: dict[bytes, bytes]) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def run_prompts(run: Run) -> pd.DataFrame:
    """The run's stored prompt table, indexed by prompt_id."""
    frame = pd.read_parquet(run.root / PROMPTS_FILE)
    return frame.set_index("prompt_id", drop=False)
