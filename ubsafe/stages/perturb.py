"""Stage `perturb`: encode each shard's images under every perturbation and severity, to the cache.

Same decode → resize → crop path as the clean embeddings; the perturbation is applied to the [0, 1]
input tensor, then the encoder normalises and encodes. Each (perturbation, severity) is its own file
per shard, so runs that share a cache and add perturbations encode only what is new. Seeds come from
(config seed, sample id, perturbation, severity), never from the batch.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from ubsafe import embeddings as store
from ubsafe.progress import progress
from ubsafe.stages import Needs, common
from ubsafe.stages.embed import cache_key, encoder_keys
from ubsafe.targets import runs_stage

if TYPE_CHECKING:
    from ubsafe.rundir import Run

NAME = "perturb"
SHARDED = True
NEEDS = Needs(
    inputs=("plan.parquet", "dataset images"),
    outputs=("<cache>/<encoder key>/<fingerprint>/<variant>/shard-NNNNN.h5",),
    gpu=True,
)
log = logging.getLogger(__name__)


def perturb_device(run: Run) -> str:
    """Where the corruptions run: on the GPU with the GPU decode path (a pinned CUDA device)."""
    return "cuda" if common.decode_path(run) == "gpu" else "cpu"


def variants(run: Run) -> list[tuple[str, int, str]]:
    """(perturbation, severity, variant name) for every configured perturbation level."""
    from ubsafe.perturb import get_perturbation

    out = []
    for name in run.config.perturbations:
        perturbation = get_perturbation(name)
        levels = tuple(perturbation.info.severities)
        # a single-level perturbation (the paper's noise) runs at its level whatever the severities
        chosen = levels if len(levels) == 1 else [s for s in run.config.severities if s in levels]
        for severity in chosen:
            variant = store.variant_name(
                name, severity, run.config.seed, perturbation.fingerprint(perturb_device(run))
            )
            out.append((name, severity, variant))
    return out


def applies(run: Run) -> bool:
    return runs_stage(run.config.target, NAME) and bool(run.config.perturbations)


def missing_variants(run: Run, key: str, shard: int) -> list[tuple[str, int, str]]:
    ckey = cache_key(run, key)
    return [v for v in variants(run) if not store.is_complete(run, ckey, v[2], shard)]


def is_done(run: Run, shard: int) -> bool:
    return all(not missing_variants(run, key, shard) for key in encoder_keys(run))


def run_shard(run: Run, shard: int) -> None:
    import torch

    from ubsafe.perturb import get_perturbation, perturbation_seed

    rows = run.shard_plan(shard)
    for key in encoder_keys(run):
        todo = missing_variants(run, key, shard)
        if not todo:
            continue
        encoder = common.run_encoder(run, key)
        ckey = cache_key(run, key)
        decoded = common.decode_inputs(run, rows, encoder)
        inputs = torch.stack(decoded.items) if decoded.items else None
        normalization = (tuple(encoder.mean), tuple(encoder.std))
        batch = run.config.batch_size
        for name, severity, variant in progress(
            todo, desc=f"perturb {key} shard {shard}", unit="variant"
        ):
            start = time.perf_counter()
            perturbation = get_perturbation(name)
            parts = []
            for i in range(0, len(decoded.sample_ids), batch):
                ids = decoded.sample_ids[i : i + batch]
                seeds = [perturbation_seed(run.config.seed, sid, name, severity) for sid in ids]
                assert inputs is not None
                images = perturbation.apply(
                    inputs[i : i + batch], severity, seeds, normalization=normalization
                )
                parts.append(encoder.encode(images))
            matrix = (
                np.concatenate(parts) if parts else np.zeros((0, encoder.embed_dim), np.float32)
            )
            store.write_shard(
                store.shard_file(run, ckey, variant, shard),
                store.expected(run, ckey, variant, shard),
                decoded.sample_ids,
                matrix,
                decoded.skipped,
                dtype=run.config.embedding_dtype,
                identity={
                    **encoder.identity(),
                    "perturbation": name,
                    "severity": severity,
                    "seed": run.config.seed,
                },
                provenance=encoder.provenance(),
            )
            seconds = time.perf_counter() - start
            log.info(
                "%s shard %d %s: %d images in %.1f s (%.1f images/s)",
                key,
                shard,
                variant,
                len(decoded.sample_ids),
                seconds,
                len(decoded.sample_ids) / max(seconds, 1e-9),
            )
