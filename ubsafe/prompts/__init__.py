"""Prompt sets for text-to-image generation: I2P, prompt manifests, UnsafeBench's text column.

`open_prompts(path, fmt=None)` returns a checked `PromptSet` or raises `DatasetError` with every
problem; `readers.py` documents the formats, `promptset.py` the table, ids and default seeds.
"""

from __future__ import annotations

from ubsafe.prompts.demo import builtin_prompts, demo_prompts
from ubsafe.prompts.promptset import COLUMNS, PromptSet, default_seed
from ubsafe.prompts.readers import detect, looks_like_prompts, open_prompts
from ubsafe.prompts.tokens import Truncation, truncate, truncation

__all__ = [
    "COLUMNS",
    "PromptSet",
    "Truncation",
    "builtin_prompts",
    "default_seed",
    "demo_prompts",
    "detect",
    "looks_like_prompts",
    "open_prompts",
    "truncate",
    "truncation",
]
