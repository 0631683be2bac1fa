"""Which images an attack uses (UnsafeBench's draw) and the per-sample seeds of its random draws."""

from __future__ import annotations

import hashlib
import random

from ubsafe.attacks.spec import PAPER_SAMPLES_PER_SOURCE


def paper_draw(n_candidates: int, *, seed: int, k: int = PAPER_SAMPLES_PER_SOURCE) -> list[int]:
    """Positions of min(k, n) candidates, drawn as UnsafeBench does.

    UnsafeBench seeds Python's `random` with the seed (2023, 2024 or 2025) and calls
    `random.sample(range(n), min(n, k))` over the clean-correct images of one source, in its own
    order (`ubsafe.stages.attack.paper_pool`); a private `random.Random(seed)` gives the same draw
    without touching global state. The caller supplies the candidates in a stable order and maps
    positions back to samples; the order of the returned positions is the draw order.
    """
    if n_candidates < 0:
        raise ValueError(f"n_candidates {n_candidates!r} must be ≥ 0")
    if k < 0:
        raise ValueError(f"k {k!r} must be ≥ 0 (images to draw per source; the paper uses 500)")
    return random.Random(seed).sample(range(n_candidates), min(n_candidates, k))


def attack_seed(run_seed: int, sample_id: str, attack_key: str) -> int:
    """The seed of one sample's random draws under one attack, from stable identities alone.

    A hash of (run seed, sample_id, attack key), not of a position in a batch or shard, so a
    sample's PGD start is the same for any shard layout and across processes.
    """
    text = f"{int(run_seed)}\x1f{sample_id}\x1f{attack_key}".encode()
    digest = hashlib.blake2b(text, digest_size=8, person=b"ubsafe-attack").digest()
    return int.from_bytes(digest, "little") >> 1  # in [0, 2**63), as torch seeds need
