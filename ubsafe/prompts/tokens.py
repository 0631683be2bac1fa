"""Prompts longer than the text encoder's context, counted as the diffusers pipeline cuts them.

Stable Diffusion pipelines tokenize with `truncation=True, max_length=tokenizer.model_max_length`
(77 for CLIP, start and end tokens included) and log what falls off; the image only sees the
first 75 text tokens. `truncation` reports which prompts lose text and what they lose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Truncation:
    """Per prompt: its token count (with start/end tokens) and the text cut off ("" if none)."""

    max_length: int
    lengths: tuple[int, ...]
    removed: tuple[str, ...]

    @property
    def truncated(self) -> tuple[bool, ...]:
        return tuple(n > self.max_length for n in self.lengths)

    @property
    def count(self) -> int:
        return sum(self.truncated)


def truncation(prompts: Sequence[str], tokenizer: Any, max_length: int | None = None) -> Truncation:
    """Token counts of `prompts` under `tokenizer` and what the pipeline's truncation removes."""
    limit = int(max_length if max_length is not None else tokenizer.model_max_length)
    ids = tokenizer(list(prompts), truncation=False, padding=False)["input_ids"]
    lengths = tuple(len(row) for row in ids)
    removed = tuple(
        tokenizer.decode(row[limit - 1 : -1]) if len(row) > limit else "" for row in ids
    )
    return Truncation(max_length=limit, lengths=lengths, removed=removed)


def truncate(prompts: Sequence[str], tokenizer: Any, max_length: int | None = None) -> list[str]:
    """The text the encoder sees: each prompt cut to `max_length` tokens (start/end included)."""
    limit = int(max_length if max_length is not None else tokenizer.model_max_length)
    ids = tokenizer(list(prompts), truncation=True, max_length=limit, padding=False)["input_ids"]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in ids]
