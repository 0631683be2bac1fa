"""PGD's random start: uniform in the L∞ ball, drawn per sample from that sample's own seed."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def uniform_start(
    shape: Sequence[int],
    eps: float,
    seeds: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Noise U[−eps, eps) of `shape` (B, ...); row i comes from a generator seeded by seeds[i].

    The draw happens on the CPU and is then moved, so a sample's start is the same whatever its
    batch, its position in it, or the device the attack runs on.
    """
    batch, *sample_shape = (int(n) for n in shape)
    if len(seeds) != batch:
        raise ValueError(
            f"got {len(seeds)} seeds for a batch of {batch} images; pass one per image"
        )
    rows = []
    for seed in seeds:
        generator = torch.Generator(device="cpu").manual_seed(_checked_seed(seed))
        # float64 then cast: the same start for a float32 or a float64 attack
        unit = torch.rand(sample_shape, generator=generator, dtype=torch.float64)
        rows.append(unit * (2.0 * eps) - eps)
    noise = torch.stack(rows) if rows else torch.empty((0, *sample_shape), dtype=torch.float64)
    return noise.to(device=device, dtype=dtype)


def _checked_seed(seed: int) -> int:
    value = int(seed)
    if value != seed or not 0 <= value < 2**63:
        raise ValueError(f"seed {seed!r} must be an integer in [0, 2**63)")
    return value
