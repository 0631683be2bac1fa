"""ubsafe's fast PerspectiveVision: per-category probes on cached image embeddings.

It keeps what makes PerspectiveVision work — training on both real and AI-generated images of the
UnsafeBench train split, a decision per listed category, negative sampling, balancing — and drops
the 7B model: one weighted, L2-regularised logistic regression per category on the embedding cache,
fitted full-batch with L-BFGS in seconds on a CPU.

- Features: embeddings L2-normalised, then standardised with the train split's mean and std.
- Probe c: positives are the unsafe images collected for c. Negatives are all safe images and —
  the analogue of negative sampling, where an unsafe image whose category is not listed must be
  answered Safe — the unsafe images of other categories. Positives and negatives carry equal total
  weight (the analogue of oversampling unsafe examples until they match the safe ones).
- Decision for a set of listed categories (all 11 by default): unsafe iff some listed probe's
  logit is positive; the score is the sigmoid of the largest listed logit.
- Surrogate for attacks: logits [−m/2, m/2] with m the largest listed logit, so that argmax is the
  hard rule and gradients flow through the winning probe.

Saved as safetensors: weight [C, D], bias [C], mean [D], std [D]; metadata holds the category
names, the settings and a format version.

As the registry's fitted classifier `perspective-fast`: the fit stage calls `fit_entry` on the
run's train rows (real and AI-generated) and saves `fitted/perspective-fast.safetensors`; `load`
reads it back. Decisions are the probes' rule with all 11 categories listed — unsafe iff some
category's probe fires — per row in float64; the score is the largest probe logit.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ubsafe import atomic
from ubsafe.classifiers.base import Decision, EmbeddingClassifier, as_embedding_matrix, decision
from ubsafe.taxonomy import CATEGORIES

if TYPE_CHECKING:
    import torch

    from ubsafe.classifiers.registry import ClassifierEntry

FORMAT_VERSION = "1"
#: What a fitted file says it holds (its `ubsafe.classifier` metadata): the file kind.
FILE_KIND = "perspective-fast"

#: The bias of a probe that never fires.
NEVER = -1.0e4


@dataclass(frozen=True)
class FastSettings:
    """`l2` is the ridge strength on standardised features (per unit of total sample weight)."""

    l2: float = 1e-2
    negative_sampling: bool = True
    balance: bool = True
    max_iter: int = 500
    tolerance: float = 1e-4


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: the fit's operations are small, so extra threads cost more than
    they give (much more on a shared node), and one thread makes the fit bit-identical whatever
    the machine's thread count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


class FastPerspective:
    """Fitted per-category probes. Build with `fit_fast`, or `FastPerspective.load`."""

    def __init__(
        self,
        categories: Sequence[str],
        weight: torch.Tensor,
        bias: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        settings: FastSettings,
    ):
        self.categories = tuple(categories)
        self.weight = weight.float()
        self.bias = bias.float()
        self.mean = mean.float()
        self.std = std.float()
        self.settings = settings

    # --- features and logits ---

    def features(self, embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw embeddings → L2-normalised, standardised features (differentiable)."""
        import torch

        x = _as_tensor(embeddings).float()
        x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def category_logits(self, embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Float[N, C]: each category probe's logit."""
        x = self.features(embeddings)
        return x @ self.weight.to(x.device).T + self.bias.to(x.device)

    def _columns(self, listed: Sequence[str] | None) -> list[int]:
        if listed is None:
            return list(range(len(self.categories)))
        unknown = [c for c in listed if c not in self.categories]
        if unknown or not listed:
            raise ValueError(
                f"listed categories {list(listed)} must be a non-empty subset of the fitted "
                f"{list(self.categories)}"
            )
        return [self.categories.index(c) for c in listed]

    def max_logit(
        self, embeddings: np.ndarray | torch.Tensor, listed: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Float[N]: the largest logit among the listed categories' probes."""
        return self.category_logits(embeddings)[:, self._columns(listed)].amax(dim=1)

    def decide(
        self, embeddings: np.ndarray | torch.Tensor, listed: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(pred int8[N], score float32[N]): unsafe iff some listed probe fires; score = σ(max)."""
        import torch

        with torch.no_grad():
            m = self.max_logit(embeddings, listed)
        pred = (m > 0).to(torch.int8).cpu().numpy()
        return pred, torch.sigmoid(m).float().cpu().numpy()

    def surrogate(self, listed: Sequence[str] | None = None) -> torch.nn.Module:
        """A module mapping raw embeddings [N, D] to logits [N, 2] whose argmax is `decide`."""
        import torch

        owner = self
        columns = self._columns(listed)

        class FastPerspectiveSurrogate(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("weight", owner.weight[columns].clone())
                self.register_buffer("bias", owner.bias[columns].clone())
                self.register_buffer("mean", owner.mean.clone())
                self.register_buffer("std", owner.std.clone())

            def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
                x = embeddings.float()
                x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
                x = (x - self.mean) / self.std
                m = (x @ self.weight.T + self.bias).amax(dim=1)
                return torch.stack([-m / 2, m / 2], dim=1)

        return FastPerspectiveSurrogate()

    # --- persistence ---

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the probes as safetensors, atomically."""
        from safetensors.torch import save_file

        tensors = {
            "weight": self.weight.contiguous(),
            "bias": self.bias.contiguous(),
            "mean": self.mean.contiguous(),
            "std": self.std.contiguous(),
        }
        metadata = {
            "ubsafe.classifier": FILE_KIND,
            "format_version": FORMAT_VERSION,
            "categories": json.dumps(self.categories),
            "settings": json.dumps(asdict(self.settings)),
        }
        with atomic.atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FastPerspective:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("ubsafe.classifier") != FILE_KIND:
                raise ValueError(f"{path} is not a fitted fast PerspectiveVision model")
            if metadata.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"{path} has format {metadata.get('format_version')}, this ubsafe reads "
                    f"{FORMAT_VERSION}; refit it (`ubsafe run` redoes the fit stage)"
                )
            tensors = {name: handle.get_tensor(name) for name in ("weight", "bias", "mean", "std")}
        return cls(
            json.loads(metadata["categories"]),
            tensors["weight"],
            tensors["bias"],
            tensors["mean"],
            tensors["std"],
            FastSettings(**json.loads(metadata["settings"])),
        )


def probe_targets(
    labels: np.ndarray,
    categories: Sequence[str],
    probe_categories: Sequence[str],
    *,
    negative_sampling: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Targets y[N, C] and inclusion mask[N, C] of each category's probe (module docstring)."""
    labels = np.asarray(labels).astype(bool)
    collected = np.asarray(categories)
    targets = np.zeros((len(labels), len(probe_categories)), dtype=np.float32)
    include = np.zeros_like(targets, dtype=bool)
    for c, name in enumerate(probe_categories):
        own = collected == name
        targets[:, c] = labels & own
        include[:, c] = True if negative_sampling else (~labels | own)
    return targets, include


def fit_fast(
    embeddings: np.ndarray,
    labels: np.ndarray,
    categories: Sequence[str],
    *,
    seed: int = 0,
    settings: FastSettings | None = None,
    probe_categories: Sequence[str] = CATEGORIES,
) -> FastPerspective:
    """Fit one probe per category on train embeddings [N, D], labels (0/1) and collected categories.

    The objective per probe is (Σ wᵢ·BCE(zᵢ, yᵢ)) / Σ wᵢ + l2/2·‖w‖², convex and solved to
    convergence with L-BFGS from zero, so the fit is deterministic (`seed` seeds nothing today;
    it is kept so that stochastic variants share the signature). A category without positives
    gets a probe that never fires.
    """
    import torch

    settings = settings or FastSettings()
    x_raw = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    if x_raw.ndim != 2 or len(x_raw) != len(labels) or len(labels) != len(categories):
        raise ValueError(
            f"embeddings {x_raw.shape}, {len(labels)} labels and {len(categories)} categories "
            "must describe the same rows"
        )
    torch.manual_seed(seed)
    x = torch.from_numpy(x_raw).double()
    x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
    mean = x.mean(dim=0)
    std = x.std(dim=0).clamp_min(1e-6)
    # Features as [D, N]: the probes' logits are one (C × D) @ (D × N) product per evaluation.
    feats_t = ((x - mean) / std).float().T.contiguous()
    y_np, include_np = probe_targets(
        labels, categories, probe_categories, negative_sampling=settings.negative_sampling
    )
    y = torch.from_numpy(y_np.T.copy())
    sample_weight = torch.from_numpy(include_np.T.astype(np.float32))
    if settings.balance:
        positives = (sample_weight * y).sum(dim=1, keepdim=True)
        negatives = (sample_weight * (1 - y)).sum(dim=1, keepdim=True)
        total = positives + negatives
        pos_w = torch.where(positives > 0, total / (2 * positives.clamp_min(1)), 0.0)
        neg_w = torch.where(negatives > 0, total / (2 * negatives.clamp_min(1)), 0.0)
        sample_weight = sample_weight * (y * pos_w + (1 - y) * neg_w)
    weight_sum = sample_weight.sum(dim=1).clamp_min(1e-12)
    n_probes, n_features = y.shape[0], feats_t.shape[0]
    w = torch.zeros(n_probes, n_features, requires_grad=True)
    b = torch.zeros(n_probes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=settings.max_iter,
        tolerance_grad=settings.tolerance,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        z = w @ feats_t + b[:, None]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
        loss = ((sample_weight * bce).sum(dim=1) / weight_sum).sum()
        loss = loss + 0.5 * settings.l2 * (w * w).sum()
        loss.backward()
        return loss

    with _one_thread():
        optimizer.step(closure)
    weight = w.detach().clone()
    bias = b.detach().clone()
    no_positive = y.sum(dim=1) == 0
    # A probe that never saw a positive must never fire (finite, so surrogate gradients stay so).
    bias[no_positive] = NEVER
    weight[no_positive] = 0.0
    return FastPerspective(
        probe_categories, weight.float(), bias.float(), mean.float(), std.float(), settings
    )


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
