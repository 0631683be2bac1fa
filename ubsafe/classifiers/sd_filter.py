"""The Stable Diffusion safety checker's rule on the checker's projected image embedding.

For an embedding e (the checker's `visual_projection(pooler_output)`), with cosines computed in
float32 as diffusers' `StableDiffusionSafetyChecker.forward` computes them:

    special_hit = any_k round(cos(e, s_k) − ws_k, 3) > 0
    adjustment  = 0.01 if special_hit else 0.0
    unsafe      = any_j round(cos(e, c_j) − wc_j + adjustment, 3) > 0

The subtraction, the addition and the rounding run in float32 with numpy's round (half to even at
the exact edge), which is what diffusers' per-image loop does under numpy 2. The cosines themselves
are computed in float64 and rounded to float32: within one float32 step of diffusers' own product,
and independent of the batch a row arrives in.

Score: max_j (cos(e, c_j) − wc_j + adjustment), unrounded. The surrogate drops the rounding: its
unsafe margin is that score minus 0.0005 (where rounding to 3 decimals turns positive), so its
argmax agrees with the hard rule except within float error of that edge; the special-care
adjustment stays a step (no gradient), as in UnsafeBench's surrogate.

In the paper's attack mode the attacked output is UnsafeBench's own surrogate instead:
softmax([−u, u]) with u = max_j (cos(e, c_j) − wc_j + adjustment), the special-care step taken at
an unrounded score > 0, and no shift to the rounding edge (`PaperCheckerOutput`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ubsafe.classifiers.base import Decision, EmbeddingClassifier, decision
from ubsafe.classifiers.registry import ClassifierEntry
from ubsafe.classifiers.torch_head import CHUNK_ROWS, read_state_dict

#: Added to every concept score once a special-care concept fires (diffusers' `adjustment`).
SPECIAL_CARE_ADJUSTMENT = 0.01
#: round(x, 3) > 0 ⇔ x > 0.0005 (up to the half-even edge): the surrogate's threshold.
ROUNDING_EDGE = 0.0005
#: Surrogate logits are ±LOGIT_SCALE · margin, so their difference is 100 · margin.
LOGIT_SCALE = 50.0

_KEYS = (
    "concept_embeds",
    "special_care_embeds",
    "concept_embeds_weights",
    "special_care_embeds_weights",
)


@dataclass(frozen=True)
class SafetyConcepts:
    """The checker's concept vectors and thresholds (float32)."""

    concept_embeds: np.ndarray  # (17, D)
    special_care_embeds: np.ndarray  # (3, D)
    concept_thresholds: np.ndarray  # (17,)
    special_thresholds: np.ndarray  # (3,)

    @property
    def dim(self) -> int:
        return int(self.concept_embeds.shape[1])

    def check(self, source: str) -> SafetyConcepts:
        c, s = self.concept_embeds, self.special_care_embeds
        ok = (
            c.ndim == 2
            and s.ndim == 2
            and c.shape[1] == s.shape[1]
            and self.concept_thresholds.shape == (c.shape[0],)
            and self.special_thresholds.shape == (s.shape[0],)
        )
        if not ok:
            raise ValueError(
                f"sd_filter: {source}: inconsistent shapes concept_embeds {c.shape}, "
                f"special_care_embeds {s.shape}, concept_embeds_weights "
                f"{self.concept_thresholds.shape}, special_care_embeds_weights "
                f"{self.special_thresholds.shape}"
            )
        return self


def read_concepts(path: str | os.PathLike[str]) -> SafetyConcepts:
    """The four concept tensors of a checker checkpoint.

    Reads `model.safetensors` beside `path` when present (only those tensors are read), else `path`
    itself (`pytorch_model.bin`, loaded with weights_only, memory-mapped so that the vision tower's
    weights are not read).
    """
    path = Path(path)
    safetensors_path = path.with_name("model.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    if safetensors_path.is_file():
        from safetensors import safe_open

        source = safetensors_path
        with safe_open(str(safetensors_path), framework="pt") as fh:
            for key in set(_KEYS) & set(fh.keys()):
                tensors[key] = fh.get_tensor(key)
    else:
        source = path
        state = read_state_dict(path, "sd_filter", mmap=True)
        tensors = {key: state[key] for key in _KEYS if key in state}
    missing = [key for key in _KEYS if key not in tensors]
    if missing:
        raise ValueError(
            f"sd_filter: {source} lacks {missing}; expected the checkpoint of "
            "CompVis/stable-diffusion-safety-checker (StableDiffusionSafetyChecker's state dict)"
        )
    as_np = {key: tensors[key].detach().to(torch.float32).numpy().copy() for key in _KEYS}
    return SafetyConcepts(
        concept_embeds=as_np["concept_embeds"],
        special_care_embeds=as_np["special_care_embeds"],
        concept_thresholds=as_np["concept_embeds_weights"],
        special_thresholds=as_np["special_care_embeds_weights"],
    ).check(str(source))


def cosines(embeddings: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """cos(e_i, v_j) as float32, computed in float64 (rows normalised as F.normalize does)."""
    e = np.asarray(embeddings, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return (e @ v.T).astype(np.float32)


def checker_rule(
    concept_cos: np.ndarray,
    special_cos: np.ndarray,
    concept_thresholds: np.ndarray,
    special_thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' decision from float32 cosines: (unsafe bool [N], unrounded score float32 [N])."""
    special = special_cos.astype(np.float32) - special_thresholds.astype(np.float32)
    special_hit = np.asarray((np.round(special, 3) > 0).any(axis=1), dtype=bool)
    concept = concept_cos.astype(np.float32) - concept_thresholds.astype(np.float32)
    adjusted = np.where(
        special_hit[:, None], concept + np.float32(SPECIAL_CARE_ADJUSTMENT), concept
    ).astype(np.float32)
    unsafe = np.asarray((np.round(adjusted, 3) > 0).any(axis=1), dtype=bool)
    return unsafe, adjusted.max(axis=1, initial=-np.inf)


class CheckerSurrogate(nn.Module):
    """Raw checker embeddings (N, D) → ±50 · (max_j(cos − w + adjustment) − 0.0005), (N, 2)."""

    concept_embeds: torch.Tensor
    special_embeds: torch.Tensor
    concept_thresholds: torch.Tensor
    special_thresholds: torch.Tensor

    def __init__(self, concepts: SafetyConcepts) -> None:
        super().__init__()
        self.register_buffer("concept_embeds", torch.from_numpy(concepts.concept_embeds.copy()))
        self.register_buffer(
            "special_embeds", torch.from_numpy(concepts.special_care_embeds.copy())
        )
        self.register_buffer(
            "concept_thresholds", torch.from_numpy(concepts.concept_thresholds.copy())
        )
        self.register_buffer(
            "special_thresholds", torch.from_numpy(concepts.special_thresholds.copy())
        )

    #: where a special-care score counts as a hit (the hard rule's rounding edge)
    special_edge = ROUNDING_EDGE

    def max_score(self, embeddings: torch.Tensor) -> torch.Tensor:
        """max_j (cos(e, c_j) − wc_j + adjustment), the adjustment a step at `special_edge`."""
        e = F.normalize(embeddings, dim=-1)
        concept = e @ F.normalize(self.concept_embeds, dim=-1).T - self.concept_thresholds
        special = e @ F.normalize(self.special_embeds, dim=-1).T - self.special_thresholds
        # A step, as in the hard rule: no gradient flows through the special-care test.
        hit = (special.detach() > self.special_edge).any(dim=1, keepdim=True)
        return (concept + SPECIAL_CARE_ADJUSTMENT * hit).amax(dim=1)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        margin = self.max_score(embeddings) - ROUNDING_EDGE
        return LOGIT_SCALE * torch.stack([-margin, margin], dim=1)


class PaperCheckerOutput(CheckerSurrogate):
    """UnsafeBench's attacked checker: softmax([−u, u]), u = max_j (cos − w + adjustment).

    As its `StableDiffusionSafetyChecker.forward`: the special-care adjustment applies where an
    unrounded special score is > 0, and u is neither shifted nor scaled.
    """

    special_edge = 0.0

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        u = self.max_score(embeddings)
        return torch.softmax(torch.stack([-u, u], dim=1), dim=1)


class SafetyCheckerRule(EmbeddingClassifier):
    """sd_filter on cached checker embeddings."""

    def __init__(
        self,
        concepts: SafetyConcepts,
        *,
        entry: ClassifierEntry | None = None,
        device: str = "cpu",
    ) -> None:
        self.concepts = concepts
        self.name = entry.name if entry else "sd_filter"
        self.dim = concepts.dim
        self.categories = entry.categories if entry else ()
        self.entry = entry
        self._surrogate = CheckerSurrogate(concepts).eval().to(device)
        self._paper = PaperCheckerOutput(concepts).eval().to(device)

    def decide(self, embeddings: np.ndarray) -> Decision:
        array = self.check_embeddings(embeddings)
        c = self.concepts
        preds, scores = [], []
        for start in range(0, array.shape[0], CHUNK_ROWS):
            rows = array[start : start + CHUNK_ROWS]
            unsafe, score = checker_rule(
                cosines(rows, c.concept_embeds),
                cosines(rows, c.special_care_embeds),
                c.concept_thresholds,
                c.special_thresholds,
            )
            preds.append(unsafe)
            scores.append(score)
        if not preds:
            return decision(np.zeros(0), np.zeros(0))
        return decision(np.concatenate(preds), np.concatenate(scores))

    def surrogate(self) -> nn.Module:
        return self._surrogate

    def paper_surrogate(self) -> nn.Module:
        return self._paper


def load(
    entry: ClassifierEntry,
    weights_dir: Path,
    *,
    device: str = "cpu",
    fitted_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> SafetyCheckerRule:
    """sd_filter from the checker checkpoint in the weights directory."""
    (checkpoint,) = entry.weights
    concepts = read_concepts(checkpoint.local_path(weights_dir))
    return SafetyCheckerRule(concepts, entry=entry, device=device)
