"""Seeds for perturbations: one per (run seed, sample, perturbation, severity).

A sample's perturbed image must not depend on which batch, shard or position it lands in, nor on
the process or platform that computes it. So its seed is a hash of its identity (BLAKE2b, not
Python's salted `hash`), and every random draw of a perturbation comes from that seed alone.
"""

from __future__ import annotations

import hashlib

#: Bump when the derivation changes: every perturbed image of every run would change with it.
SEED_SCHEME = "ubsafe-perturb-v1"

_SEPARATOR = "\x1f"  # ASCII unit separator: cannot occur in the integer and name fields


def perturbation_seed(seed: int, sample_id: str, name: str, severity: int) -> int:
    """A 63-bit seed for one sample under one perturbation at one severity.

    The value is BLAKE2b-64 of `SEED_SCHEME, seed, sample_id, name, severity` joined by U+001F,
    read little-endian, top bit cleared: identical in every process, on every platform, and
    independent of the order in which samples are processed.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    if not isinstance(severity, int) or isinstance(severity, bool):
        raise TypeError(f"severity must be an int, got {severity!r} ({type(severity).__name__})")
    text = _SEPARATOR.join((SEED_SCHEME, str(seed), str(sample_id), name, str(severity)))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def perturbation_seeds(seed: int, sample_ids: list[str], name: str, severity: int) -> list[int]:
    """`perturbation_seed` for each sample id, in order."""
    return [perturbation_seed(seed, sample_id, name, severity) for sample_id in sample_ids]
