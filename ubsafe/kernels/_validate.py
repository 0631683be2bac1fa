"""Argument checks shared by the kernels' Python entry points; errors name the value and the fix."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray


def as_1d(name: str, values: Any, dtype: type[np.generic]) -> NDArray[Any]:
    """`values` as a contiguous 1-D array of `dtype`, refusing lossy conversions."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if np.issubdtype(np.dtype(dtype), np.integer) and arr.size and arr.dtype.kind not in "biu":
        raise TypeError(
            f"{name}: expected integers, got dtype {arr.dtype} (cast with .astype(int) first)"
        )
    target = np.dtype(dtype)
    if target.kind in "iu" and arr.size and arr.dtype.kind in "iu" and arr.dtype != target:
        # Narrowing must not wrap an out-of-range value into a valid one (256 → 0 as int8).
        info = np.iinfo(target)
        low, high = arr.min(), arr.max()
        if low < info.min or high > info.max:
            bad = int(np.argmax((arr < info.min) | (arr > info.max)))
            raise ValueError(f"{name}: row {bad} has value {arr[bad]}, outside the {target} range")
    return np.ascontiguousarray(arr, dtype=target)


def same_length(**arrays: NDArray[Any]) -> int:
    """The common length of `arrays`; a ValueError lists every length when they differ."""
    lengths = {name: arr.shape[0] for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"arrays must have one length per row, got {listed}")
    return next(iter(lengths.values()))


def n_groups_arg(n_groups: int) -> int:
    if int(n_groups) != n_groups or n_groups < 0:
        raise ValueError(f"n_groups={n_groups!r}: expected a non-negative integer")
    return int(n_groups)


def counts_arg(name: str, counts: Any, n_cells: int) -> NDArray[np.int64]:
    """A (G, n_cells) int64 array of non-negative cell counts."""
    arr = np.asarray(counts)
    if arr.ndim != 2 or arr.shape[1] != n_cells:
        raise ValueError(f"{name}: expected shape (n_groups, {n_cells}), got {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer cell counts, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and arr.min() < 0:
        g = int(np.argwhere(arr < 0)[0][0])
        raise ValueError(f"{name}: group {g} has a negative cell count {arr[g].tolist()}")
    return arr


def seeds_arg(seeds: Any, n_groups: int) -> NDArray[np.uint64]:
    """One unsigned 64-bit seed per group (see `group_seed`)."""
    raw = np.asarray(seeds)
    if raw.ndim != 1 or raw.shape[0] != n_groups:
        raise ValueError(
            f"seeds: expected one seed per group ({n_groups}), got shape {raw.shape}; "
            "build them with ubsafe.kernels.group_seed(config_seed, classifier, category, ...)"
        )
    if raw.size and raw.dtype.kind not in "iuO":
        raise TypeError(f"seeds: expected integers, got dtype {raw.dtype}")
    if raw.dtype.kind in "iO" and raw.size and min(int(s) for s in raw) < 0:
        raise ValueError("seeds: expected non-negative integers below 2**64")
    return np.ascontiguousarray(raw.astype(np.uint64))


def zero_division_arg(zero_division: float) -> float:
    """scikit-learn's `zero_division`: the value of a metric whose denominator is zero."""
    value = float(zero_division)
    if not (value in (0.0, 1.0) or math.isnan(value)):
        raise ValueError(
            f"zero_division={zero_division!r}: expected 0.0, 1.0 or nan (as scikit-learn)"
        )
    return value


def level_arg(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r}: expected a confidence level in (0, 1), e.g. 0.95")
    return float(level)


def n_boot_arg(n_boot: int) -> int:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r}: expected a positive number of replicates")
    return int(n_boot)
