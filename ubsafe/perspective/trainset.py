"""PerspectiveVision's training set, built as `PerspectiveVision/build_training_set.py` builds it.

For every train image, in the reference's order (category by category in taxonomy order, source by
source, rows in dataset order), the prompt lists a shuffled random subset of 1–10 *other*
categories' definition lines plus the image's own category; the answer is
`Safety Status: Safe, Unsafe Category: None` or `Safety Status: Unsafe, Unsafe Category: <its
category>`. Negative sampling adds, for each unsafe image, a second example whose prompt lists only
the other categories (by name, as the current reference does) with the answer Safe. Unsafe
examples are then oversampled with replacement until they are as many as the safe ones, and the
whole list is shuffled.

Randomness follows the reference's use of Python's global `random`: reseeded with the example index
before each example's draws, the state carried over to the oversampling draw and the final shuffle.
With `seed=0` the per-example seeds are the indices themselves, so the output is the reference's;
another seed `s` reseeds with `s · 2**32 + index`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ubsafe import atomic
from ubsafe.taxonomy import CATEGORIES, DEFAULT_SOURCE_MAP
from ubsafe.vlm import prompts

if TYPE_CHECKING:
    import pandas as pd

SAFE_ANSWER = "Safety Status: Safe, Unsafe Category: None"


def unsafe_answer(category: str) -> str:
    return f"Safety Status: Unsafe, Unsafe Category: {category}"


@dataclass(frozen=True)
class TrainingExample:
    """One conversation: the image (by sample id), the prompt, the expected answer."""

    id: str
    sample_id: str
    prompt: str
    answer: str

    @property
    def unsafe(self) -> bool:
        return self.answer.startswith("Safety Status: Unsafe")

    def to_llava(self) -> dict[str, Any]:
        """The LLaVA training-data record the reference writes (`image` holds the sample id)."""
        return {
            "id": self.id,
            "image": self.sample_id,
            "conversations": [
                {"from": "human", "value": f"<image>\n{self.prompt}"},
                {"from": "gpt", "value": self.answer},
            ],
        }


class _ReseededRandom:
    """Python's global `random` as the reference drives it: reseeded per example, state kept."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = random.Random(seed)

    def reseed(self, index: int) -> random.Random:
        self.rng = random.Random(self.seed * 2**32 + index)
        return self.rng


def _design(rng: random.Random, negative: bool, unsafe: bool, category: str) -> tuple[str, str]:
    held_out = [c for c in CATEGORIES if c != category]
    rng.shuffle(held_out)
    listed = held_out[: rng.randint(1, max(1, len(held_out)))]
    if negative:
        rng.shuffle(listed)
        return prompts.perspective_prompt(listed, names_only=True), SAFE_ANSWER
    listed.append(category)
    rng.shuffle(listed)
    answer = unsafe_answer(category) if unsafe else SAFE_ANSWER
    return prompts.perspective_prompt(listed), answer


def _ordered_rows(rows: pd.DataFrame, sources: Sequence[str]) -> list[tuple[str, bool, str]]:
    unknown_categories = sorted(set(rows["category"]) - set(CATEGORIES))
    if unknown_categories:
        raise ValueError(f"categories outside the taxonomy: {unknown_categories}")
    unknown_sources = sorted(set(rows["source"]) - set(sources))
    if unknown_sources:
        raise ValueError(
            f"sources {unknown_sources} are not in the source order {list(sources)}; "
            "pass sources=... listing every source in the order the training set takes them"
        )
    ordered = []
    for category in CATEGORIES:
        for source in sources:
            group = rows[(rows["category"] == category) & (rows["source"] == source)]
            for sample_id, label in zip(group["sample_id"], group["label"], strict=True):
                ordered.append((str(sample_id), _is_unsafe(label), category))
    return ordered


def _is_unsafe(label: Any) -> bool:
    if label in (1, "Unsafe", True):
        return True
    if label in (0, "Safe", False):
        return False
    raise ValueError(f"label {label!r} is neither 0/1 nor Safe/Unsafe")


def build_training_set(
    rows: pd.DataFrame,
    *,
    seed: int = 0,
    negative_sampling: bool = True,
    sources: Sequence[str] = tuple(DEFAULT_SOURCE_MAP),
) -> list[TrainingExample]:
    """The PerspectiveVision training conversations for `rows` (the train split).

    `rows` has sample_id, label (0/1 or Safe/Unsafe), category and source, in dataset order.
    """
    stream = _ReseededRandom(seed)
    examples: list[TrainingExample] = []
    unsafe_rows: list[tuple[str, str]] = []
    index = 0
    for sample_id, unsafe, category in _ordered_rows(rows, sources):
        if unsafe:
            unsafe_rows.append((sample_id, category))
        prompt, answer = _design(stream.reseed(index), False, unsafe, category)
        examples.append(TrainingExample(str(index), sample_id, prompt, answer))
        if negative_sampling and unsafe:
            prompt, answer = _design(stream.reseed(index), True, unsafe, category)
            examples.append(TrainingExample(f"{index}_augment", sample_id, prompt, answer))
        index += 1
    n_unsafe = sum(e.unsafe for e in examples)
    shortfall = max(len(examples) - 2 * n_unsafe, 0) if unsafe_rows else 0
    extra = stream.rng.choices(unsafe_rows, k=shortfall)
    for sample_id, category in extra:
        prompt, answer = _design(stream.reseed(index), False, True, category)
        examples.append(TrainingExample(str(index), sample_id, prompt, answer))
        index += 1
    stream.rng.shuffle(examples)
    return examples


def write_training_json(examples: Sequence[TrainingExample], path: str | os.PathLike[str]) -> None:
    """Write the examples as the LLaVA training JSON (`training_prompts.json`), atomically."""
    atomic.write_text(path, json.dumps([e.to_llava() for e in examples], indent=2))
