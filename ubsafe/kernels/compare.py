"""Comparisons of perturbed against clean embeddings: per-row cosine and per-group means.

`row_cosine` reads float16 or float32 (N, D) arrays as they come from the embedding cache, without
a float32 copy (float16 is widened element by element inside the kernel, see `ubsafe.kernels.half`),
in parallel over rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import prange
from numpy.typing import NDArray

from ubsafe.kernels._jit import REASSOC, kernel
from ubsafe.kernels._validate import as_1d, n_groups_arg, same_length
from ubsafe.kernels.half import kernel_view, to_float32


@kernel(parallel=True, fastmath=REASSOC)
def _row_cosine_kernel(clean: np.ndarray, perturbed: np.ndarray, out: np.ndarray) -> None:
    n_rows, dim = clean.shape
    for i in prange(n_rows):
        dot = 0.0
        norm_c = 0.0
        norm_p = 0.0
        for j in range(dim):
            c = np.float64(to_float32(clean[i, j]))
            p = np.float64(to_float32(perturbed[i, j]))
            dot += c * p
            norm_c += c * c
            norm_p += p * p
        denominator = math.sqrt(norm_c) * math.sqrt(norm_p)
        if denominator == 0.0:
            out[i] = 0.0
        else:
            cosine = dot / denominator
            # Rounding can step just outside [-1, 1]; NaN fails both tests and passes through.
            if cosine > 1.0:
                cosine = 1.0
            elif cosine < -1.0:
                cosine = -1.0
            out[i] = cosine


def row_cosine(clean: Any, perturbed: Any) -> NDArray[np.float32]:
    """Cosine similarity of each row of `clean` with the same row of `perturbed`: float32[N].

    Inputs are (N, D) float16 or float32 (either mix). Elements are widened to float64 as they are
    read and each row's three sums run in float64, so the result is the float64 cosine rounded to
    float32, and large float32 inputs cannot overflow. Defined values at the edges: a row where
    either vector is all zeros gives 0.0 (as `sklearn.metrics.pairwise.cosine_similarity` and
    `torch.nn.functional.cosine_similarity`); a row holding NaN or infinity gives NaN.
    """
    c = kernel_view("clean", clean)
    p = kernel_view("perturbed", perturbed)
    if c.shape != p.shape:
        raise ValueError(
            f"clean {c.shape} and perturbed {p.shape}: expected the same rows and dimension "
            "(read both from the same shard)"
        )
    out = np.empty(c.shape[0], dtype=np.float32)
    _row_cosine_kernel(c, p, out)
    return out


@kernel()
def _group_mean_kernel(
    group: np.ndarray, values: np.ndarray, n_groups: int, out: np.ndarray
) -> int:
    total = np.zeros(n_groups)
    count = np.zeros(n_groups, dtype=np.int64)
    for i in range(group.shape[0]):
        g = group[i]
        if g < 0 or g >= n_groups:
            return i
        v = np.float64(values[i])
        if not math.isnan(v):
            total[g] += v
            count[g] += 1
    for g in range(n_groups):
        out[g] = total[g] / count[g] if count[g] > 0 else math.nan
    return -1


def group_mean(group: Any, values: Any, n_groups: int) -> NDArray[np.float64]:
    """Mean of a per-row value per group (e.g. mean cosine), skipping NaN: float64[n_groups].

    A group with no rows, or only NaN values, gets NaN. Sums run in float64.
    """
    g = as_1d("group", group, np.int64)
    v = np.asarray(values)
    if v.ndim != 1 or v.dtype.kind != "f":
        raise TypeError(f"values: expected a 1-D float array, got {v.dtype} of shape {v.shape}")
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float32)
    v = np.ascontiguousarray(v)
    same_length(group=g, values=v)
    n_groups = n_groups_arg(n_groups)
    out = np.empty(n_groups)
    bad = _group_mean_kernel(g, v, n_groups, out)
    if bad >= 0:
        raise ValueError(f"group: row {bad} has group {g[bad]}, outside [0, {n_groups})")
    return out
