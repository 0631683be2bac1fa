"""Embedding classifiers whose rule is a small torch module, and safe checkpoint reading.

One module computes logits [safe, unsafe] from raw embeddings. The attack stage differentiates it in
float32 (`surrogate`); `decide` runs a float64 copy of the same module on the CPU, so that a row's
decision and score (rounded to float32 at the end) do not depend on the batch it arrives in: float32
matrix products on the CPU give different last bits for different batch sizes.
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ubsafe.classifiers.base import Decision, EmbeddingClassifier, decision
from ubsafe.classifiers.registry import ClassifierEntry

#: Rows per forward pass in `decide` (bounds memory; results do not depend on it).
CHUNK_ROWS = 4096


def read_state_dict(
    path: str | os.PathLike[str], owner: str, *, mmap: bool = False
) -> dict[str, Any]:
    """A `torch.save`d mapping of tensors, loaded safely (weights_only) onto the CPU.

    A file that would run code when unpickled, or that is not a mapping, raises a ValueError naming
    the file.
    """
    path = Path(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{owner}: {path} is not a plain tensor checkpoint; refusing to unpickle it with code "
            f"execution enabled ({str(exc).splitlines()[0]}). "
            "Re-download it with `ubsafe weights fetch`."
        ) from None
    except RuntimeError as exc:
        if mmap and "mmap" in str(exc):  # legacy (pre-zip) checkpoints cannot be memory-mapped
            return read_state_dict(path, owner, mmap=False)
        raise ValueError(f"{owner}: cannot read {path} as a torch checkpoint: {exc}") from None
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"{owner}: {path} holds a {type(loaded).__name__}, expected a state dict (a mapping of "
            "tensors)"
        )
    return dict(loaded)


def load_into(module: nn.Module, state: Mapping[str, Any], path: Path, owner: str) -> None:
    """`module.load_state_dict(state, strict=True)`, with errors naming the file and the keys."""
    expected = set(module.state_dict())
    found = set(state)
    if expected != found:
        missing = sorted(expected - found)
        extra = sorted(found - expected)
        raise ValueError(
            f"{owner}: {path} does not have the expected layout: missing keys {missing}, "
            f"unexpected keys {extra}"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{owner}: {path}: {exc}") from None


class HeadClassifier(EmbeddingClassifier):
    """An embedding classifier defined by `head`: raw embeddings → logits [safe, unsafe].

    `pred` is `logit_unsafe > logit_safe` (a tie is safe, as argmax picks index 0); `score` is
    `score_of(logits)` computed in float64 and rounded to float32.
    """

    def __init__(
        self,
        head: nn.Module,
        *,
        name: str,
        dim: int,
        categories: tuple[str, ...],
        entry: ClassifierEntry | None = None,
        device: str | torch.device = "cpu",
        score_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
        paper_output: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        self.name = name
        self.dim = dim
        self.categories = categories
        self.entry = entry
        self.device = torch.device(device)
        head = head.eval()
        for parameter in head.parameters():
            parameter.requires_grad_(False)
        self._exact = copy.deepcopy(head).to(device="cpu", dtype=torch.float64)
        self._head = head.to(self.device)
        self._score_of = score_of or _margin
        self._paper_output = paper_output or SoftmaxOf

    def decide(self, embeddings: np.ndarray) -> Decision:
        array = self.check_embeddings(embeddings)
        preds, scores = [], []
        with torch.inference_mode():
            for start in range(0, array.shape[0], CHUNK_ROWS):
                logits = self._exact(torch.from_numpy(array[start : start + CHUNK_ROWS]))
                preds.append((logits[:, 1] > logits[:, 0]).numpy())
                scores.append(self._score_of(logits).numpy())
        if not preds:
            return decision(np.zeros(0), np.zeros(0))
        return decision(np.concatenate(preds), np.concatenate(scores))

    def surrogate(self) -> nn.Module:
        return self._head

    def paper_surrogate(self) -> nn.Module:
        return self._paper_output(self._head)


def _margin(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, 1] - logits[:, 0]


class BinaryLogits(nn.Module):
    """Wrap a module giving one unsafe logit z per row (N,) or (N, 1) into logits [0, z].

    softmax([0, z]) = [1 − sigmoid(z), sigmoid(z)]: exactly the classifier's own probabilities.
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        z = self.body(embeddings).reshape(embeddings.shape[0])
        return torch.stack([torch.zeros_like(z), z], dim=1)


class SoftmaxOf(nn.Module):
    """The softmax of a module's logits [safe, unsafe] (what Q16's reference model returned)."""

    def __init__(self, logits: nn.Module) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(embeddings), dim=1)


class ProbabilityPairSoftmax(nn.Module):
    """softmax([1 − p, p]) with p the classifier's unsafe probability (softmax of the logits).

    UnsafeBench's MultiHeaded and NSFW-detector models returned this to foolbox: the probability
    pair [1 − p, p] passed through one more softmax, so its two outputs differ by
    tanh(p − 1/2) rather than by 2p − 1.
    """

    def __init__(self, logits: nn.Module) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.logits(embeddings), dim=1)[:, 1:]
        return torch.softmax(torch.cat([1.0 - p, p], dim=1), dim=1)
