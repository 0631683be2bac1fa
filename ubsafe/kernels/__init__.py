"""Numba kernels for ubsafe's metrics: confusion cells, the multinomial bootstrap, McNemar, AUROC,
the cluster bootstrap over prompts (`cluster`), and the comparisons of perturbed against clean
embeddings.

Conventions shared by every kernel:

- unsafe is the positive class (label 1); groups are numbered 0..G-1 by the caller, which keeps the
  mapping to (classifier, category, source, ...) names;
- confusion cells are `tp, fp, fn, tn`; joint cells of two predictions are column
  `4*label + 2*pred_a + pred_b` (`ubsafe.kernels.confusion`);
- every random draw is keyed by (group seed, replicate), so results are identical for any thread
  count and any set of other groups; `group_seed` derives a group's seed from the run's seed and
  the group's names;
- metrics with a zero denominator follow scikit-learn's `zero_division`; empty groups are NaN.

Importing this package imports numba; `ubsafe/__init__.py` does not, so the CLI stays fast.
Compiled kernels are cached on disk; see `ubsafe.kernels._jit` for the cache and cluster notes,
and `warm_up()` to fill the cache before many tasks start.
"""

from ubsafe.kernels.auroc import AurocInterval, auroc, auroc_ci, grouped_auroc_ci
from ubsafe.kernels.bootstrap import (
    Difference,
    Interval,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_gap,
    bootstrap_paired,
)
from ubsafe.kernels.cluster import cluster_kappa, cluster_rates, cluster_ratio, compress_cells
from ubsafe.kernels.compare import group_mean, row_cosine
from ubsafe.kernels.confusion import (
    CELLS,
    JOINT_CELLS,
    METRICS,
    binary_metrics,
    confusion_counts,
    joint_counts,
    point_metrics,
    split_joint,
)
from ubsafe.kernels.mcnemar import discordant_counts, mcnemar
from ubsafe.kernels.robustness import (
    ROBUSTNESS_COUNTS,
    ROBUSTNESS_METRICS,
    bootstrap_robustness,
    flip_rate,
    robust_accuracy,
    robustness_counts,
)
from ubsafe.kernels.seeds import group_seed, group_seeds
from ubsafe.kernels.warmup import warm_up

__all__ = [
    "CELLS",
    "JOINT_CELLS",
    "METRICS",
    "ROBUSTNESS_COUNTS",
    "ROBUSTNESS_METRICS",
    "AurocInterval",
    "Difference",
    "Interval",
    "auroc",
    "auroc_ci",
    "binary_metrics",
    "bootstrap_ci",
    "bootstrap_distribution",
    "bootstrap_gap",
    "bootstrap_paired",
    "bootstrap_robustness",
    "cluster_kappa",
    "cluster_rates",
    "cluster_ratio",
    "compress_cells",
    "confusion_counts",
    "discordant_counts",
    "flip_rate",
    "group_mean",
    "group_seed",
    "group_seeds",
    "grouped_auroc_ci",
    "joint_counts",
    "mcnemar",
    "point_metrics",
    "robust_accuracy",
    "robustness_counts",
    "row_cosine",
    "split_joint",
    "warm_up",
]
