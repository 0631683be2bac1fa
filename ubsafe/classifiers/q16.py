"""Q16: cosine of the image embedding to two learned prompt vectors.

Row 0 of the prompt array is "non inappropriate", row 1 "inappropriate". Logits are
100 · cos(e, p_k) with both sides L2-normalised (CLIP's logit scale, as UnsafeBench computes them);
unsafe iff cos(e, p_1) > cos(e, p_0), a tie is safe. Score: 100 · (cos_1 − cos_0). The rule is
invariant to the scale of e, so raw or normalised embeddings decide alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ubsafe.classifiers.registry import ClassifierEntry
from ubsafe.classifiers.safe_pickle import load_numpy_pickle
from ubsafe.classifiers.torch_head import HeadClassifier

#: CLIP's logit scale, which UnsafeBench applies to the cosines.
LOGIT_SCALE = 100.0


def read_prompts(path: str | os.PathLike[str]) -> np.ndarray:
    """The (2, D) prompt array from Q16's pickle (float16 in the released file), as float32."""
    prompts = load_numpy_pickle(path)
    if prompts.ndim != 2 or prompts.shape[0] != 2 or not np.issubdtype(prompts.dtype, np.floating):
        raise ValueError(
            f"q16: {path} holds a {prompts.dtype} array of shape {prompts.shape}; expected a float "
            "array (2, D): row 0 'non inappropriate', row 1 'inappropriate'"
        )
    if not np.isfinite(prompts).all() or (np.linalg.norm(prompts, axis=1) == 0).any():
        raise ValueError(f"q16: {path} holds a zero or non-finite prompt row")
    return prompts.astype(np.float32)  # float16 → float32 is exact


class PromptCosineLogits(nn.Module):
    """Raw embeddings (N, D) → 100 · cos to each prompt row, (N, 2) [safe, unsafe]."""

    prompts: torch.Tensor

    def __init__(self, prompts: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prompts", prompts.clone())

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        prompts = F.normalize(self.prompts, dim=-1)
        return LOGIT_SCALE * F.normalize(embeddings, dim=-1) @ prompts.T


def build(
    prompts: np.ndarray,
    *,
    entry: ClassifierEntry | None = None,
    device: str = "cpu",
) -> HeadClassifier:
    """A Q16 classifier from a prompt array (2, D)."""
    head = PromptCosineLogits(torch.from_numpy(np.asarray(prompts, dtype=np.float32)))
    return HeadClassifier(
        head,
        name=entry.name if entry else "q16",
        dim=int(prompts.shape[1]),
        categories=entry.categories if entry else (),
        entry=entry,
        device=device,
    )


def load(
    entry: ClassifierEntry,
    weights_dir: Path,
    *,
    device: str = "cpu",
    fitted_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> HeadClassifier:
    """Q16 from `prompts.p` in the weights directory."""
    (prompt_file,) = entry.weights
    return build(read_prompts(prompt_file.local_path(weights_dir)), entry=entry, device=device)
