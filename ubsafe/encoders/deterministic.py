"""Seed-free pseudo-random weights: the same values in every process, run, machine and version.

Entries with `init: deterministic` (the `tiny` encoder of the demo and the tests) need no download,
yet their embeddings must be identical wherever they are computed, because cached embeddings and
every result downstream are compared across processes. A seeded torch init would tie the values to
torch's generator and to open_clip's init order, both free to change between versions. Instead each
tensor is filled from SHAKE-256 of (namespace, generator version, parameter name): a uniform
distribution with the variance of a standard init, LayerNorm gains at one and biases at zero.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from ubsafe.encoders.identity import DETERMINISTIC_INIT_VERSION

# Parameters that embed tokens or positions: scaled by their width, as open_clip's init does.
_EMBEDDINGS = ("class_embedding", "positional_embedding", "token_embedding.weight")
# Projections applied as `x @ P` (input dimension first).
_RIGHT_PROJECTIONS = ("proj", "text_projection")


def hashed_uniform(label: str, count: int) -> np.ndarray:
    """`count` float64 values, uniform on (-1, 1), fully determined by `label`."""
    raw = hashlib.shake_256(label.encode("utf-8")).digest(4 * count)
    words = np.frombuffer(raw, dtype="<u4").astype(np.float64)
    return (words + 0.5) / 2.0**31 - 1.0


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
    reference: dict[str, torch.Tensor], namespace: str
) -> dict[str, torch.Tensor]:
    """Values for every floating tensor of `reference` (shapes and dtypes kept, values replaced)."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in reference.items():
        if not tensor.is_floating_point():
            state[name] = tensor.clone()
            continue
        shape = tuple(tensor.shape)
        state[name] = torch.from_numpy(_values(namespace, name, shape)).to(tensor.dtype)
    return state


def _values(namespace: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "logit_scale":
        return np.full(shape, math.log(1 / 0.07), dtype=np.float32)
    scale = parameter_scale(name, shape)
    if scale is None:
        fill = 1.0 if leaf == "weight" else 0.0
        return np.full(shape, fill, dtype=np.float32)
    label = f"ubsafe-deterministic-init:v{DETERMINISTIC_INIT_VERSION}:{namespace}:{name}"
    uniform = hashed_uniform(label, math.prod(shape))
    # A uniform on (-a, a) has standard deviation a / sqrt(3).
    return (uniform * (scale * math.sqrt(3.0))).astype(np.float32).reshape(shape)
