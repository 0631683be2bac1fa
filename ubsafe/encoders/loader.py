"""`load_encoder`: from a registry key and a weights directory to a ready `Encoder`, offline."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ubsafe.encoders.encoder import Encoder, resolve_device
from ubsafe.encoders.identity import check_precision
from ubsafe.encoders.registry import EncoderEntry, get_entry
from ubsafe.weights import offline_hub, require


def load_encoder(
    key: str | EncoderEntry,
    weights_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    batch_size: int = 32,
    precision: str = "auto",
    micro_batch: int | None = None,
) -> Encoder:
    """Build the encoder `key` with its weights from `weights_dir` (never from the network).

    Missing weight files raise `MissingWeightsError` (naming each file and `ubsafe weights fetch`)
    before anything is built. `device="auto"` picks CUDA when a GPU is visible. `batch_size` is the
    number of samples per forward pass on a GPU; on CPU a pass holds one sample unless `micro_batch`
    says otherwise (see `ubsafe.encoders.encoder` on batch invariance). `precision="auto"` runs
    bfloat16 (weights and inputs) on CUDA and float32 on CPU.
    """
    entry = key if isinstance(key, EncoderEntry) else get_entry(key)
    check_precision(precision)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    weights_dir = Path(weights_dir)
    require(entry.key, entry.weight_files(), weights_dir)
    offline_hub()
    resolved = resolve_device(device)
    if micro_batch is None:
        micro_batch = batch_size if resolved.type == "cuda" else 1

    if entry.family == "open_clip":
        from ubsafe.encoders.openclip import build_open_clip, open_clip_versions

        tower, to_pixels, normalize = build_open_clip(entry, weights_dir)
        mean, std = tuple(normalize.mean), tuple(normalize.std)
        libraries = open_clip_versions()
    else:
        from ubsafe.encoders.sdchecker import build_sd_checker, sd_checker_versions

        tower, to_pixels, processor = build_sd_checker(entry, weights_dir)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
        libraries = sd_checker_versions()

    return Encoder(
        entry,
        tower,
        to_pixels,
        image_size=entry.preprocess.crop,
        mean=mean,
        std=std,
        device=resolved,
        precision=precision,
        micro_batch=micro_batch,
        libraries=libraries,
    )
