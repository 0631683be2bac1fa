"""The two shapes of a classifier: on cached embeddings, or on images.

Both return `(pred, score)`: `pred` int8 (1 = unsafe), `score` float32, a monotone unsafety score
for AUROC whose meaning each classifier documents (its registry entry's `score`). Embedding
classifiers also offer a differentiable surrogate of their rule, which the attack stage uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ubsafe.classifiers.registry import ClassifierEntry

Decision = tuple[np.ndarray, np.ndarray]


class EmbeddingClassifier(ABC):
    """A classifier whose decision is a function of one encoder embedding per image."""

    #: Registry name, e.g. "q16".
    name: str
    #: Embedding width it reads.
    dim: int
    #: Categories it is scored on (the registry's default coverage).
    categories: tuple[str, ...]
    #: The registry entry it was loaded from (None when built directly, e.g. a fresh probe).
    entry: ClassifierEntry | None = None

    @abstractmethod
    def decide(self, embeddings: np.ndarray) -> Decision:
        """The hard rule on raw encoder outputs (N, dim), float16 or float32 → (pred, score).

        `pred` is int8 (1 = unsafe), `score` float32.

        Vectorised over the whole array. The result for a row depends on that row alone, not on
        the other rows, the batch size or the thread count.
        """

    @abstractmethod
    def surrogate(self) -> torch.nn.Module:
        """A differentiable module: raw embeddings (N, dim) float32 → logits (N, 2) [safe, unsafe].

        Its argmax agrees with `decide` (up to float32 rounding at the boundary, and for sd_filter
        outside the band where the hard rule rounds). In eval mode, parameters frozen.
        """

    def paper_surrogate(self) -> torch.nn.Module:
        """What UnsafeBench's attacked model returned, from raw embeddings: (N, 2) [safe, unsafe].

        The attack stage differentiates this in `attack.mode = "paper"`. The default is the softmax
        of `surrogate()`'s logits (Q16's softmax(100 · cos)); a classifier whose reference model
        returned something else overrides it.
        """
        from ubsafe.classifiers.torch_head import SoftmaxOf

        return SoftmaxOf(self.surrogate())

    def check_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """`embeddings` as a float64 array (N, dim), or a ValueError saying what is wrong."""
        return as_embedding_matrix(embeddings, self.dim, self.name)


class ImageClassifier(ABC):
    """A classifier that reads the decoded image itself."""

    name: str
    categories: tuple[str, ...]
    entry: ClassifierEntry | None = None

    @abstractmethod
    def decide_images(self, images: Sequence[Image.Image]) -> Decision:
        """The hard rule on RGB images: (pred int8 [N], score float32 [N])."""


def as_embedding_matrix(embeddings: np.ndarray, dim: int, owner: str) -> np.ndarray:
    """Check shape, dtype and finiteness of `embeddings`; return a float64 copy (exact upcast)."""
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(
            f"{owner}: embeddings have shape {array.shape}; expected (N, {dim}). "
            "Is the embedding cache from the encoder this classifier reads (its registry entry)?"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{owner}: embeddings have dtype {array.dtype}; expected float16 or float32"
        )
    array = array.astype(np.float64)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        shown = ", ".join(str(r) for r in rows[:10])
        raise ValueError(
            f"{owner}: {rows.size} embedding row(s) hold NaN or infinity (rows {shown}"
            f"{', …' if rows.size > 10 else ''}); re-run the embed stage for those shards"
        )
    return array


def decision(pred: np.ndarray, score: np.ndarray) -> Decision:
    """Pack a decision in the documented dtypes."""
    return np.asarray(pred, dtype=np.int8), np.asarray(score, dtype=np.float32)
