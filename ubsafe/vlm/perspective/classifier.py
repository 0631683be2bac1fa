"""`perspective-fast` in the classifier registry: the fast PerspectiveVision probes
(`ubsafe.vlm.perspective.fast`) as a fitted embedding classifier.

The fit stage calls `fit_entry` on the run's train rows (real and AI-generated) and saves the result
to `fitted/perspective-fast.safetensors`; `load` reads it back. Decisions are the probes' rule with
all 11 categories listed — unsafe iff some category's probe fires — computed per row in float64, so
a row's decision does not depend on the other rows of its batch or shard. The score is the largest
probe logit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ubsafe.classifiers.base import Decision, EmbeddingClassifier, as_embedding_matrix, decision
from ubsafe.vlm.perspective.fast import FastPerspective, FastSettings, fit_fast

if TYPE_CHECKING:
    import torch

    from ubsafe.classifiers.registry import ClassifierEntry

NAME = "perspective-fast"


class FastPerspectiveClassifier(EmbeddingClassifier):
    """Fitted per-category probes behind the embedding-classifier surface."""

    def __init__(self, model: FastPerspective, *, entry: ClassifierEntry | None = None) -> None:
        self.model = model
        self.entry = entry
        self.name = entry.name if entry else NAME
        self.categories = entry.categories if entry else model.categories
        self.dim = int(model.weight.shape[1])
        # float64 copies for the per-row rule
        self._weight = model.weight.double().numpy()
        self._bias = model.bias.double().numpy()
        self._mean = model.mean.double().numpy()
        self._std = model.std.double().numpy()

    def max_logit(self, embeddings: np.ndarray) -> np.ndarray:
        """Float64[N]: the largest probe logit of each row (elementwise products, no BLAS)."""
        x = as_embedding_matrix(embeddings, self.dim, self.name)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        features = (x - self._mean) / self._std
        logits = np.stack(
            [(features * w).sum(axis=1) + b for w, b in zip(self._weight, self._bias, strict=True)],
            axis=1,
        )
        return np.asarray(logits.max(axis=1))

    def decide(self, embeddings: np.ndarray) -> Decision:
        m = self.max_logit(embeddings)
        return decision(m > 0, m)

    def surrogate(self) -> torch.nn.Module:
        module = self.model.surrogate().eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        return module

    def save(self, path: str | Path) -> Path:
        """Write the probes (what the fit stage calls)."""
        return self.model.save(path)


def settings_from(options: Mapping[str, Any]) -> FastSettings:
    """FastSettings from a registry entry's (resolved) options."""
    defaults = FastSettings()
    return FastSettings(
        l2=float(options.get("l2", defaults.l2)),
        negative_sampling=bool(options.get("negative_sampling", defaults.negative_sampling)),
        balance=bool(options.get("balance", defaults.balance)),
        max_iter=int(options.get("max_iter", defaults.max_iter)),
    )


def fit_entry(
    entry: ClassifierEntry,
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    encoder: str,
    categories: np.ndarray | None = None,
) -> FastPerspectiveClassifier:
    """Fit the per-category probes on train rows (`categories`: each row's collected category)."""
    if categories is None:
        raise ValueError(
            f"{entry.name} fits one probe per category: pass each training row's category"
        )
    model = fit_fast(
        np.asarray(embeddings),
        np.asarray(labels),
        [str(c) for c in categories],
        seed=seed,
        settings=settings_from(entry.options),
        probe_categories=entry.categories,
    )
    return FastPerspectiveClassifier(model, entry=entry)


def load(
    entry: ClassifierEntry,
    weights_dir: Path,
    *,
    device: str = "cpu",
    fitted_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> FastPerspectiveClassifier:
    """The probes the run's fit stage wrote to `fitted_dir/perspective-fast.safetensors`."""
    from ubsafe.classifiers.probe import existing_fitted_path

    path = existing_fitted_path(entry, fitted_dir)
    model = FastPerspective.load(path)
    if tuple(model.categories) != tuple(entry.categories):
        raise ValueError(
            f"{path} holds probes for {list(model.categories)}, but {entry.name} lists "
            f"{list(entry.categories)}; re-run the fit stage"
        )
    return FastPerspectiveClassifier(model, entry=entry)
