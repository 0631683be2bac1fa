"""Seed-free pseudo-random weights: the same values in every process, run, machine and version.

Entries with `init: deterministic` (the `tiny` encoder of the demo and the tests, and the benchmark
models) need no download, yet their embeddings must be identical wherever they are computed,
because cached embeddings and every result downstream are compared across processes. A seeded torch
init would tie the values to torch's generator and to open_clip's init order, both free to change
between versions. Instead each tensor is filled from its own PCG64 stream, seeded with SHA-256 of
(namespace, generator version, parameter name), read through `random_raw` (NumPy guarantees that
bit stream across versions): a uniform distribution with the variance of a standard init, LayerNorm
gains at one and biases at zero. Bulk generation keeps a ViT-L/14 within a second or two on CPU
(`bench/bench_embed.py` asserts it).

Version history: v1 filled tensors from SHAKE-256 output (about 20 s for a ViT-L/14); v2 is the
PCG64 stream above.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ubsafe.encoders.identity import DETERMINISTIC_INIT_VERSION

# Parameters that embed tokens or positions: scaled by their width, as open_clip's init does.
_EMBEDDINGS = ("class_embedding", "positional_embedding", "token_embedding.weight")
# Projections applied as `x @ P` (input dimension first).
_RIGHT_PROJECTIONS = ("proj", "text_projection")


def hashed_uniform(label: str, count: int, scale: float = 1.0) -> np.ndarray:
    """`count` float32 values, uniform on (-scale, scale), fully determined by `label`."""
    seed = int.from_bytes(hashlib.sha256(label.encode("utf-8")).digest()[:16], "little")
    raw = np.random.PCG64(seed).random_raw((count + 1) // 2)
    words = np.asarray(raw, dtype="<u8").view("<u4")[:count]
    # 24 random bits k per value, exact in float32: ((k + 0.5) / 2**23 - 1) * scale, which lies
    # strictly inside (-scale, scale), computed as k * a + b in float32.
    np.right_shift(words, np.uint32(8), out=words)
    values = np.empty(count, dtype=np.float32)
    step = np.float32(scale * 2.0**-23)
    np.multiply(words.view("<i4"), step, out=values, dtype=np.float32, casting="unsafe")
    values += np.float32((2.0**-24 - 1.0) * scale)
    return values


def parameter_scale(name: str, shape: tuple[int, ...]) -> float | None:
    """Standard deviation for a weight, or None for a constant (gain 1, bias 0, logit scale)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("logit_scale",) or leaf.endswith("bias") or (leaf == "weight" and len(shape) == 1):
        return None
    if any(name.endswith(suffix) for suffix in _EMBEDDINGS):
        return shape[-1] ** -0.5
    if leaf in _RIGHT_PROJECTIONS:
        return shape[0] ** -0.5
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return fan_in**-0.5


def deterministic_state_dict(
    reference: dict[str, torch.Tensor], namespace: str, *, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Values for every floating tensor of `reference` (shapes and dtypes kept, values replaced).

    `reference` may hold meta tensors (only shapes and dtypes are read). `prefix` is prepended to
    each name for the values' labels, so that a sub-module (`visual.` of a CLIP model) gets the
    values its parameters have in the whole model.
    """

    def one(item: tuple[str, torch.Tensor]) -> torch.Tensor:
        name, tensor = item
        if not tensor.is_floating_point():
            if tensor.is_meta:
                raise ValueError(f"{prefix}{name}: a non-float meta tensor has no values to keep")
            return tensor.clone()
        values = torch.from_numpy(_values(namespace, prefix + name, tuple(tensor.shape)))
        return values if tensor.dtype == torch.float32 else values.to(tensor.dtype)

    # Each tensor has its own stream, so the values do not depend on the number of threads;
    # NumPy releases the GIL while it generates and converts.
    items = list(reference.items())
    workers = min(8, os.cpu_count() or 1, max(1, len(items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="init") as pool:
        tensors = list(pool.map(one, items))
    return {name: tensor for (name, _), tensor in zip(items, tensors, strict=True)}


def _values(namespace: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "logit_scale":
        return np.full(shape, math.log(1 / 0.07), dtype=np.float32)
    scale = parameter_scale(name, shape)
    if scale is None:
        fill = 1.0 if leaf == "weight" else 0.0
        return np.full(shape, fill, dtype=np.float32)
    label = f"ubsafe-deterministic-init:v{DETERMINISTIC_INIT_VERSION}:{namespace}:{name}"
    # A uniform on (-a, a) has standard deviation a / sqrt(3).
    return hashed_uniform(label, math.prod(shape), scale * math.sqrt(3.0)).reshape(shape)
