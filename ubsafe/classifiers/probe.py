"""A logistic-regression probe on L2-normalised embeddings, fitted within a run.

The fit standardises the normalised embeddings (train mean and standard deviation), runs
scikit-learn's lbfgs logistic regression, and folds the standardisation back into one linear map,
so the stored probe is z = w · e/‖e‖ + b (float64). Unsafe iff z > 0; score z; surrogate logits
[0, z]. Saved as safetensors with its encoder key, dimension, training sources and row count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ubsafe.atomic import atomic_path
from ubsafe.classifiers.base import Decision, EmbeddingClassifier, as_embedding_matrix, decision
from ubsafe.classifiers.registry import ClassifierEntry
from ubsafe.taxonomy import CATEGORIES

if TYPE_CHECKING:
    import torch

FORMAT = "ubsafe-probe"
FORMAT_VERSION = 1
#: The safetensors metadata key holding the probe's description (JSON).
METADATA_KEY = "ubsafe"


class FittedWeightsMissingError(FileNotFoundError):
    """A fitted classifier's file is absent: the run's fit stage has not produced it."""


class Probe(EmbeddingClassifier):
    """z = weight · e/‖e‖ + bias on raw embeddings e; unsafe iff z > 0."""

    def __init__(
        self,
        weight: np.ndarray,
        bias: float,
        *,
        name: str = "probe",
        encoder: str = "unknown",
        sources: Sequence[str] = (),
        n: int = 0,
        n_unsafe: int = 0,
        seed: int = 0,
        categories: Sequence[str] = CATEGORIES,
        entry: ClassifierEntry | None = None,
    ) -> None:
        weight = np.asarray(weight, dtype=np.float64)
        if weight.ndim != 1 or not np.isfinite(weight).all() or not np.isfinite(bias):
            raise ValueError(
                f"{name}: probe weights must be a finite vector, got shape {weight.shape}"
            )
        self.weight = weight
        self.bias = float(bias)
        self.name = name
        self.dim = int(weight.shape[0])
        self.encoder = encoder
        self.sources = tuple(sources)
        self.n = int(n)
        self.n_unsafe = int(n_unsafe)
        self.seed = int(seed)
        self.categories = tuple(categories)
        self.entry = entry

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """z for each row, float64."""
        array = as_embedding_matrix(embeddings, self.dim, self.name)
        norms = np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
        # An elementwise product summed per row (not a BLAS product): a row's value does not
        # depend on the other rows of its batch.
        return (array / norms * self.weight).sum(axis=1) + self.bias

    def decide(self, embeddings: np.ndarray) -> Decision:
        z = self.logits(embeddings)
        return decision(z > 0, z)

    def surrogate(self) -> torch.nn.Module:
        import torch

        from ubsafe.classifiers.torch_head import BinaryLogits

        class NormalizedLinear(torch.nn.Module):
            def __init__(self, weight: np.ndarray, bias: float) -> None:
                super().__init__()
                self.linear = torch.nn.Linear(weight.shape[0], 1)
                with torch.no_grad():
                    self.linear.weight.copy_(torch.from_numpy(weight[None, :]))
                    self.linear.bias.fill_(bias)

            def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
                normalized = torch.nn.functional.normalize(embeddings, dim=-1)
                return self.linear(normalized)

        module = BinaryLogits(NormalizedLinear(self.weight, self.bias)).eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        return module

    def metadata(self) -> dict[str, Any]:
        """What the file records besides the tensors."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "classifier": self.name,
            "encoder": self.encoder,
            "dim": self.dim,
            "sources": list(self.sources),
            "n": self.n,
            "n_unsafe": self.n_unsafe,
            "seed": self.seed,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the probe as safetensors (tensors `weight`, `bias`), atomically.

        The metadata is one JSON string under the key `ubsafe` (sorted keys): safetensors writes
        several metadata keys in an unpredictable order; the same probe must give the same bytes.
        """
        from safetensors.numpy import save_file

        path = Path(path)
        tensors = {"weight": self.weight, "bias": np.array([self.bias], dtype=np.float64)}
        metadata = {METADATA_KEY: json.dumps(self.metadata(), sort_keys=True)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str], *, entry: ClassifierEntry | None = None) -> Probe:
        """A probe written by `save`; a file of another format, or of another entry, raises."""
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="np") as fh:
                raw = (fh.metadata() or {}).get(METADATA_KEY, "{}")
                keys = set(fh.keys())
                weight = fh.get_tensor("weight") if "weight" in keys else None
                bias_array = fh.get_tensor("bias") if "bias" in keys else None
            meta = json.loads(raw)
        except Exception as exc:
            raise ValueError(
                f"{path}: not a readable ubsafe probe file ({exc}); re-run the fit stage"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or keys != {"weight", "bias"}:
            raise ValueError(
                f"{path}: not a ubsafe probe file (metadata {raw}); re-run the fit stage"
            )
        assert weight is not None and bias_array is not None
        bias = float(bias_array[0])
        name = str(meta.get("classifier", "probe"))
        sources = tuple(meta.get("sources", ()))
        if entry is not None and (name != entry.name or sources != entry.train_sources):
            raise ValueError(
                f"{path}: holds probe {name!r} trained on {sources}, but entry "
                f"{entry.name!r} trains on {entry.train_sources}; re-run the fit stage"
            )
        return cls(
            weight,
            bias,
            name=name,
            encoder=str(meta.get("encoder", "unknown")),
            sources=sources,
            n=int(meta.get("n", 0)),
            n_unsafe=int(meta.get("n_unsafe", 0)),
            seed=int(meta.get("seed", 0)),
            categories=entry.categories if entry else CATEGORIES,
            entry=entry,
        )


def fit_probe(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    name: str = "probe",
    encoder: str = "unknown",
    sources: Sequence[str] = ("real", "ai"),
    C: float = 1.0,
    class_weight: str = "none",
    max_iter: int = 1000,
) -> Probe:
    """Fit the probe on raw embeddings (N, D) and labels (1 = unsafe).

    Deterministic: the same rows in the same order and the same seed give the same weights.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"{name}: embeddings have shape {x.shape}; expected (N, D)")
    x = as_embedding_matrix(x, x.shape[1], name)
    y = np.asarray(labels)
    if y.shape != (x.shape[0],) or not np.isin(y, (0, 1)).all():
        raise ValueError(
            f"{name}: labels must be N = {x.shape[0]} values in {{0, 1}}, got {y.shape}"
        )
    counts = np.bincount(y.astype(np.int64), minlength=2)
    if counts.min() == 0:
        raise ValueError(
            f"{name}: the training rows hold {counts[0]} safe and {counts[1]} unsafe images; "
            f"a probe needs both (sources {', '.join(sources)}: check the train split)"
        )
    if class_weight not in ("none", "balanced"):
        raise ValueError(f"{name}: class_weight {class_weight!r} must be 'none' or 'balanced'")

    normalized = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    mean = normalized.mean(axis=0)
    std = normalized.std(axis=0)
    std[std == 0] = 1.0  # a constant feature gets weight 0 anyway
    model = LogisticRegression(
        C=C,
        class_weight=None if class_weight == "none" else "balanced",
        max_iter=max_iter,
        random_state=seed,
    )
    model.fit((normalized - mean) / std, y.astype(np.int64))
    coef = model.coef_[0] / std
    bias = float(model.intercept_[0] - coef @ mean)
    return Probe(
        coef,
        bias,
        name=name,
        encoder=encoder,
        sources=sources,
        n=x.shape[0],
        n_unsafe=int(counts[1]),
        seed=seed,
    )


def fit_entry(
    entry: ClassifierEntry,
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    encoder: str,
    categories: np.ndarray | None = None,
) -> Probe:
    """Fit `entry`'s probe with its registry options (the caller passes its train sources' rows).

    `categories` is part of the fitted-classifier interface (per-category models use it); one probe
    pools all categories.
    """
    options = dict(entry.options)
    probe = fit_probe(
        embeddings,
        labels,
        seed=seed,
        name=entry.name,
        encoder=encoder,
        sources=entry.train_sources,
        C=float(options.get("C", 1.0)),
        class_weight=str(options.get("class_weight", "none")),
        max_iter=int(options.get("max_iter", 1000)),
    )
    probe.categories = entry.categories
    probe.entry = entry
    return probe


def fitted_path(fitted_dir: str | os.PathLike[str], name: str) -> Path:
    """Where the fit stage writes, and `load` reads, the classifier `name`."""
    return Path(fitted_dir) / f"{name}.safetensors"


def existing_fitted_path(entry: ClassifierEntry, fitted_dir: Path | None) -> Path:
    """The fitted file of `entry` in the run's `fitted_dir`; raises, naming what to run, if not."""
    if fitted_dir is None:
        raise FittedWeightsMissingError(
            f"{entry.name} is fitted within a run: pass the run's fitted/ directory (fitted_dir)"
        )
    path = fitted_path(fitted_dir, entry.name)
    if not path.is_file():
        raise FittedWeightsMissingError(
            f"{entry.name}: {path} does not exist; run the fit stage first "
            "(`ubsafe run effectiveness ...` runs it before scoring)"
        )
    return path


def load(
    entry: ClassifierEntry,
    weights_dir: Path,
    *,
    device: str = "cpu",
    fitted_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> Probe:
    """The probe that the run's fit stage wrote to `fitted_dir/<name>.safetensors`."""
    return Probe.read(existing_fitted_path(entry, fitted_dir), entry=entry)
