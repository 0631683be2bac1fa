"""Per-group seeds: stable, specified, and distinct for distinct groups."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ubsafe.kernels import group_seed, group_seeds

ROOT = Path(__file__).resolve().parents[1]


def test_seed_is_blake2b_of_length_prefixed_parts() -> None:
    # The documented construction, written out independently.
    h = hashlib.blake2b(digest_size=8, person=b"ubsafe-group")
    for token in ("2025", "q16", "Sexual", "real"):
        h.update(len(token.encode()).to_bytes(8, "little") + token.encode())
    assert group_seed(2025, "q16", "Sexual", "real") == int.from_bytes(h.digest(), "little")


def test_seeds_distinguish_groups_and_run_seeds() -> None:
    seeds = {
        group_seed(0, "q16", "Sexual", "real"),
        group_seed(0, "q16", "Sexual", "ai"),
        group_seed(1, "q16", "Sexual", "real"),
        group_seed(0, "ab", "c"),
        group_seed(0, "a", "bc"),
        group_seed(0, "Public and personal health"),
    }
    assert len(seeds) == 6
    assert all(0 <= s < 2**64 for s in seeds)


def test_seed_is_the_same_in_another_process() -> None:
    code = "from ubsafe.kernels.seeds import group_seed; print(group_seed(7, 'nudenet', 'é'))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == group_seed(7, "nudenet", "é")


def test_group_seeds_array_and_bad_parts() -> None:
    arr = group_seeds(3, [("a",), ("b", "c")])
    assert arr.dtype == np.uint64 and arr.tolist() == [group_seed(3, "a"), group_seed(3, "b", "c")]
    with pytest.raises(TypeError, match="expected a string"):
        group_seed(3, 4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected an integer"):
        group_seed(1.5, "a")  # type: ignore[arg-type]
