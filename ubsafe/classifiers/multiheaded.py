"""MultiHeaded: five MLP heads on the raw CLIP embedding; unsafe iff any head's probability > 0.5.

Each head is Linear(D, H), ReLU, Dropout(0.5), BatchNorm1d(H), Linear(H, 1), sigmoid, evaluated in
eval mode (running statistics, no dropout). The classifier's probability is max_h sigmoid(z_h) =
sigmoid(max_h z_h), so the logits are [0, max_h z_h] and the score is max_h z_h. In the paper's
attack mode the attacked output is UnsafeBench's: softmax([1 − p, p]) with p that probability.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ubsafe.classifiers.registry import ClassifierEntry
from ubsafe.classifiers.torch_head import (
    HeadClassifier,
    ProbabilityPairSoftmax,
    load_into,
    read_state_dict,
)

#: Heads in the order UnsafeBench stacks them; each is `<head>.pt` in the weights repository.
HEADS: tuple[str, ...] = ("sexual", "violent", "disturbing", "hateful", "political")


def make_head(dim: int, hidden: int) -> nn.Sequential:
    """One head, with the module indices that the checkpoints' keys (0.*, 3.*, 4.*) refer to."""
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.BatchNorm1d(hidden),
        nn.Linear(hidden, 1),
    )


def read_head(path: str | os.PathLike[str]) -> nn.Sequential:
    """One head from its `torch.save`d state dict (loaded with weights_only, on the CPU)."""
    path = Path(path)
    state = read_state_dict(path, "multiheaded")
    first = state.get("0.weight")
    if not isinstance(first, torch.Tensor) or first.ndim != 2:
        raise ValueError(
            f"multiheaded: {path} has no 2-D '0.weight' (keys: {sorted(state)}); expected a head "
            "state dict with keys 0.*, 3.* and 4.*"
        )
    hidden, dim = first.shape
    head = make_head(int(dim), int(hidden))
    load_into(
        head,
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
        path,
        "multiheaded",
    )
    return head.eval()


class MaxHeadLogits(nn.Module):
    """Raw embeddings (N, D) → [0, max_h z_h], (N, 2) [safe, unsafe]."""

    def __init__(self, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def head_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Each head's logit z_h, (N, number of heads)."""
        return torch.cat([head(embeddings) for head in self.heads], dim=1)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        z = self.head_logits(embeddings).amax(dim=1)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def build(
    heads: Sequence[nn.Module],
    *,
    entry: ClassifierEntry | None = None,
    device: str = "cpu",
) -> HeadClassifier:
    """A MultiHeaded classifier from its heads (all reading the same width)."""
    widths = {int(head[0].in_features) for head in heads}  # type: ignore[index]
    if len(widths) != 1:
        raise ValueError(f"multiheaded: heads read different embedding widths {sorted(widths)}")
    return HeadClassifier(
        MaxHeadLogits(heads),
        name=entry.name if entry else "multiheaded",
        dim=widths.pop(),
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
    """MultiHeaded from the five `<head>.pt` files, in the order of `HEADS`."""
    by_name = {Path(wf.filename).stem: wf for wf in entry.weights}
    missing = [h for h in HEADS if h not in by_name]
    if missing:
        raise ValueError(f"multiheaded: registry entry {entry.path} lists no weights for {missing}")
    heads = [read_head(by_name[h].local_path(weights_dir)) for h in HEADS]
    return build(heads, entry=entry, device=device)
