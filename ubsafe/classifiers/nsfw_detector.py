"""LAION's CLIP-based NSFW detector, in the PyTorch port that UnsafeBench used.

e ← e / ‖e‖; x = (e − mean) / sqrt(variance) (no epsilon, as the port); then Linear D→64, ReLU,
64→512, ReLU, 512→256, ReLU, 256→1 gives the logit z; the probability is sigmoid(z) and the image is
unsafe iff it exceeds 0.5, i.e. z > 0. Logits [0, z]; score z. In the paper's attack mode the
attacked output is UnsafeBench's: softmax([1 − p, p]) with p = sigmoid(z).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ubsafe.classifiers.registry import ClassifierEntry
from ubsafe.classifiers.torch_head import (
    BinaryLogits,
    HeadClassifier,
    ProbabilityPairSoftmax,
    load_into,
    read_state_dict,
)


class Normalization(nn.Module):
    """(x − mean) / sqrt(variance): Keras' adapted Normalization layer as the port computes it."""

    mean: torch.Tensor
    variance: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("variance", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.variance.sqrt()


class NSFWDetectorMLP(nn.Module):
    """Raw embedding (N, D) → NSFW logit (N, 1). Attribute names match the checkpoint's keys."""

    def __init__(self, dim: int = 768) -> None:
        super().__init__()
        self.norm = Normalization(dim)
        self.linear_1 = nn.Linear(dim, 64)
        self.linear_2 = nn.Linear(64, 512)
        self.linear_3 = nn.Linear(512, 256)
        self.linear_4 = nn.Linear(256, 1)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = self.norm(F.normalize(embeddings, dim=-1))
        x = F.relu(self.linear_1(x))
        x = F.relu(self.linear_2(x))
        x = F.relu(self.linear_3(x))
        return self.linear_4(x)


def read_mlp(path: str | os.PathLike[str]) -> NSFWDetectorMLP:
    """The detector from `clip_autokeras_binary_nsfw.pth` (a state dict; weights_only, CPU)."""
    path = Path(path)
    state = read_state_dict(path, "nsfw_detector")
    mean = state.get("norm.mean")
    if not isinstance(mean, torch.Tensor) or mean.ndim != 1:
        raise ValueError(
            f"nsfw_detector: {path} has no 1-D 'norm.mean' (keys: {sorted(state)}); expected the "
            "PyTorch port's state dict (norm.mean, norm.variance, linear_1..linear_4)"
        )
    mlp = NSFWDetectorMLP(int(mean.shape[0]))
    load_into(mlp, {k: v.float() for k, v in state.items()}, path, "nsfw_detector")
    return mlp.eval()


def build(
    mlp: NSFWDetectorMLP,
    *,
    entry: ClassifierEntry | None = None,
    device: str = "cpu",
) -> HeadClassifier:
    """An NSFW-detector classifier from its MLP."""
    return HeadClassifier(
        BinaryLogits(mlp),
        name=entry.name if entry else "nsfw_detector",
        dim=int(mlp.norm.mean.shape[0]),
        categories=entry.categories if entry else (),
        entry=entry,
        device=device,
        paper_output=ProbabilityPairSoftmax,
    )


def load(
    entry: ClassifierEntry,
    weights_dir: Path,
    *,
    device: str = "cpu",
    fitted_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> HeadClassifier:
    """The detector from the weights directory."""
    (checkpoint,) = entry.weights
    return build(read_mlp(checkpoint.local_path(weights_dir)), entry=entry, device=device)
