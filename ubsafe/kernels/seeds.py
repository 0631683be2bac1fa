"""Stable per-group seeds: the same group gets the same stream in every run, shard and process."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

_PERSON = b"ubsafe-group"


def group_seed(seed: int, *parts: str) -> int:
    """A 64-bit seed from the run's seed and the identity of a group.

    `parts` name the group, e.g. `group_seed(cfg.seed, "q16", "Sexual", "real")`. The value is a
    BLAKE2b hash of the seed and the parts (each length-prefixed, so ("ab", "c") and ("a", "bc")
    differ): independent of Python's hash randomisation, of the process and of the other groups.
    """
    if int(seed) != seed:
        raise TypeError(f"seed={seed!r}: expected an integer (the run config's `seed`)")
    digest = hashlib.blake2b(digest_size=8, person=_PERSON)
    for token in (str(int(seed)), *parts):
        if not isinstance(token, str):
            raise TypeError(f"group part {token!r}: expected a string (a name, not an index)")
        encoded = token.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return int.from_bytes(digest.digest(), "little")


def group_seeds(seed: int, groups: Iterable[Sequence[str]]) -> NDArray[np.uint64]:
    """`group_seed(seed, *parts)` for each group, as the uint64 array the bootstrap kernels take."""
    return np.array([group_seed(seed, *parts) for parts in groups], dtype=np.uint64)
