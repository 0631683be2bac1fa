"""Stage `embed`: decode → preprocess → encode every shard's images, clean, into the cache.

One HDF5 file per (encoder, shard). Undecodable images are listed in the file's skipped rows with
the reason; they never fail the shard. A shard already in the (shared) cache is not encoded again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ubsafe import embeddings as store
from ubsafe.progress import progress
from ubsafe.stages import Needs, common

if TYPE_CHECKING:
    import pandas as pd

    from ubsafe.rundir import Run

NAME = "embed"
SHARDED = True
NEEDS = Needs(
    inputs=("plan.parquet", "dataset images"),
    outputs=("<cache>/<encoder key>/<fingerprint>/clean/shard-NNNNN.h5",),
    gpu=True,
)
log = logging.getLogger(__name__)


def encoder_keys(run: Run) -> list[str]:
    from ubsafe.stages.preflight import encoders_needed

    return encoders_needed(run.config)


def cache_key(run: Run, key: str) -> str:
    """The encoder's cache folder; a run that decodes on the GPU gets its own (other rounding)."""
    from ubsafe.encoders.identity import identity, identity_cache_key
    from ubsafe.stages import decode_gpu

    ident = identity(key, run.config.precision)
    if common.decode_path(run) == "gpu":
        ident = {**ident, "decode": decode_gpu.IDENTITY}
    return identity_cache_key(ident)


def applies(run: Run) -> bool:
    return True


def is_done(run: Run, shard: int) -> bool:
    return all(store.is_complete(run, cache_key(run, k), "clean", shard) for k in encoder_keys(run))


def run_shard(run: Run, shard: int) -> None:
    rows = run.shard_plan(shard)
    for key in encoder_keys(run):
        ckey = cache_key(run, key)
        if store.is_complete(run, ckey, "clean", shard):
            log.info("encoder %s shard %d: already in the cache", key, shard)
            continue
        encoder = common.run_encoder(run, key)
        ids, matrix, skipped, seconds = encode_stream(
            run, rows, encoder, desc=f"embed {key} shard {shard}"
        )
        store.write_shard(
            store.shard_file(run, ckey, "clean", shard),
            store.expected(run, ckey, "clean", shard),
            ids,
            matrix,
            skipped,
            dtype=run.config.embedding_dtype,
            identity=encoder.identity(),
            provenance={**encoder.provenance(), **decode_provenance(run, encoder)},
        )
        rate = len(ids) / seconds if seconds > 0 else float("inf")
        log.info(
            "encoder %s shard %d: %d images in %.1f s (%.1f images/s), %d skipped",
            key,
            shard,
            len(ids),
            seconds,
            rate,
            len(skipped),
        )


def decode_provenance(run: Run, encoder: Any) -> dict[str, str]:
    from ubsafe.stages import decode_gpu

    return decode_gpu.provenance(common.decode_path(run), encoder.device)


def encode_stream(
    run: Run,
    rows: pd.DataFrame,
    encoder: Any,
    *,
    desc: str,
) -> tuple[list[str], np.ndarray, list[tuple[str, str]], float]:
    """Encode `rows` batch by batch while the decoder works ahead (threads, or the GPU path).

    Batches are whole multiples of the encoder's micro-batch, so only a shard's last micro-batch
    is padded.
    """
    import torch

    micro = max(1, int(getattr(encoder, "micro_batch", 1)))
    batch_size = max(micro, run.config.batch_size // micro * micro)
    ids: list[str] = []
    parts: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    pending_ids: list[str] = []
    pending: list[torch.Tensor] = []
    start = time.perf_counter()

    def flush() -> None:
        if pending:
            parts.append(encoder.encode(torch.stack(pending)))
            ids.extend(pending_ids)
            pending.clear()
            pending_ids.clear()

    stream = common.iter_inputs(run, rows, encoder)
    for sample_id, pixels, reason in progress(stream, desc=desc, total=len(rows), unit="img"):
        if pixels is None:
            skipped.append((sample_id, reason))
            continue
        pending.append(pixels)
        pending_ids.append(sample_id)
        if len(pending) == batch_size:
            flush()
    flush()
    matrix = np.concatenate(parts) if parts else np.zeros((0, encoder.embed_dim), np.float32)
    return ids, matrix, skipped, time.perf_counter() - start
