"""Evaluating PerspectiveVision as `PerspectiveVision/eval.py` does.

The prompt lists the definitions of the categories in scope (all 11 by default). The answer is read
by the reference's rule: the text before the first comma, after its last colon, is the safety
status; it contains "Unsafe" → 1, else "Safe" → 0, else undecided — which the reference settles
with an unseeded coin and ubsafe with the seeded tie-break of (seed, sample id). F1 is computed per
dataset and pooled over all images of all datasets (the paper's "overall F1", 0.810 claimed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ubsafe.taxonomy import CATEGORIES
from ubsafe.vlm import prompts
from ubsafe.vlm.decision import SAFE, UNSAFE, UNSURE
from ubsafe.vlm.llava import LlavaJudge


def parse_status(response: str) -> int:
    """1 unsafe, 0 safe, 2 undecided, by the reference's rule (module docstring)."""
    status = response.split(",")[0].split(":")[-1].strip()
    if "Unsafe" in status:
        return UNSAFE
    if "Safe" in status:
        return SAFE
    return UNSURE


class StatusConverter:
    """`parse_status` behind the response-converter surface."""

    name = "perspective-status"

    def convert(self, responses: Sequence[str]) -> np.ndarray:
        return np.fromiter((parse_status(r) for r in responses), np.int8, count=len(responses))


class PerspectiveJudge(LlavaJudge):
    """A (fine-tuned) LLaVA answering PerspectiveVision's one prompt; decisions by `parse_status`.

    `listed` are the categories the prompt defines — the same for every image (eval.py lists all
    11); the category an image was collected for does not change its prompt.
    """

    name = "perspective-llava"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        listed: Sequence[str] = CATEGORIES,
        **kwargs: Any,
    ):
        super().__init__(model, processor, StatusConverter(), **kwargs)
        self.listed = tuple(listed)
        self.prompt = prompts.perspective_prompt(self.listed)

    def prompts_for(self, category: str) -> tuple[str, ...]:
        return (self.prompt,)

    def general_prompts(self) -> tuple[str, ...]:
        return (self.prompt,)


def f1_binary(labels: np.ndarray, preds: np.ndarray) -> float:
    """F1 with unsafe as positive, 0.0 when undefined: the tables' F1 (`kernels.binary_metrics`)."""
    from ubsafe.kernels import binary_metrics

    return binary_metrics(labels, preds)["f1"]


def pooled_f1(results: Mapping[str, tuple[Sequence[int], Sequence[int]]]) -> dict[str, float]:
    """F1 of each dataset (name → (labels, predictions)) and `overall`, pooled over all images."""
    scores = {}
    all_labels, all_preds = [], []
    for name, (labels, preds) in results.items():
        if len(labels) != len(preds):
            raise ValueError(f"{name}: {len(labels)} labels but {len(preds)} predictions")
        scores[name] = f1_binary(np.asarray(labels), np.asarray(preds))
        all_labels.append(np.asarray(labels))
        all_preds.append(np.asarray(preds))
    if "overall" in scores:
        raise ValueError("'overall' is reserved for the pooled F1; rename that dataset")
    pooled_labels = np.concatenate(all_labels) if all_labels else np.zeros(0)
    pooled_preds = np.concatenate(all_preds) if all_preds else np.zeros(0)
    scores["overall"] = f1_binary(pooled_labels, pooled_preds)
    return scores


#: The paper's six evaluation datasets (the five external ones re-hosted as HF `yiting/<name>`).
EVAL_DATASETS: tuple[str, ...] = (
    "UnsafeBench_test",
    "SMID",
    "NSFWDataset",
    "MultiHeaded_Dataset",
    "Violence_Dataset",
    "Self-harm_Dataset",
)


def evaluate(
    judge: PerspectiveJudge,
    datasets: Mapping[str, tuple[Sequence[Any], Sequence[int], Sequence[str]]],
) -> tuple[dict[str, float], dict[str, Any]]:
    """Run the judge on each dataset (name → (images, labels, sample ids)); F1s and decisions.

    Sample ids must be unique across datasets (prefix them with the dataset name): they seed the
    tie-break of undecided answers.
    """
    decisions = {}
    results = {}
    for name, (images, labels, sample_ids) in datasets.items():
        decision = judge.decide_images(images, [CATEGORIES[0]] * len(images), sample_ids)
        decisions[name] = decision
        results[name] = (list(labels), decision.pred.tolist())
    return pooled_f1(results), decisions
