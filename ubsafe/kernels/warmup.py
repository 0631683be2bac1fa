"""Compile (or load from numba's cache) every kernel once, on tiny inputs.

Run it once before a fan-out of many tasks that share a `NUMBA_CACHE_DIR` (for example as the first
step of a Slurm job, or on the login node), so the tasks load compiled code instead of all
compiling at the same moment.
"""

from __future__ import annotations

import time

import numpy as np


def warm_up() -> float:
    """Run every public kernel once on tiny inputs; return the seconds it took."""
    from ubsafe import kernels as k

    start = time.perf_counter()
    group = np.array([0, 0, 1, 1], dtype=np.int64)
    label = np.array([0, 1, 0, 1], dtype=np.int8)
    pred = np.array([0, 1, 1, 1], dtype=np.int8)
    counts = k.confusion_counts(group, label, pred, 2)
    joint = k.joint_counts(group, label, pred, label, 2)
    seeds = np.array([1, 2], dtype=np.uint64)
    k.point_metrics(counts)
    k.bootstrap_ci(counts, seeds, n_boot=10)
    k.bootstrap_distribution(counts, seeds, n_boot=10)
    k.bootstrap_gap(counts, counts, seeds, n_boot=10)
    k.bootstrap_paired(joint, seeds, n_boot=10)
    k.bootstrap_robustness(joint, seeds, n_boot=10)
    k.mcnemar(joint)
    k.grouped_auroc_ci(group, label, np.linspace(0.0, 1.0, 4), 2)
    embedding = np.ones((2, 8), dtype=np.float32)
    for clean in (embedding, embedding.astype(np.float16)):
        for perturbed in (embedding, embedding.astype(np.float16)):
            k.row_cosine(clean, perturbed)
    k.group_mean(group[:2], np.ones(2, dtype=np.float32), 2)
    k.group_mean(group[:2], np.ones(2, dtype=np.float64), 2)
    offsets, cells, mult = k.compress_cells(group, np.stack([group + 1, group], axis=1), 2)
    k.cluster_rates(offsets, cells[:, 0], cells[:, 1], mult, seeds, n_boot=10, n_draws=10)
    k.cluster_ratio(offsets, cells[:, 1], cells[:, 0], mult, seeds, n_boot=10)
    k.cluster_kappa(offsets, np.tile(cells[:, :1], (1, 4)), mult, seeds, n_boot=10)
    return time.perf_counter() - start
