"""The UnsafeBench taxonomy: category names, labels and the default source mapping.

Names are spelled exactly as the dataset spells them (reference/unsafebench.md §1.4), in the order
the
reference code uses.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "Hate",
    "Harassment",
    "Violence",
    "Self-harm",
    "Sexual",
    "Shocking",
    "Illegal activity",
    "Deception",
    "Political",
    "Public and personal health",
    "Spam",
)

#: The pooled row of a classifier's covered categories in results.
OVERALL = "overall"

#: UnsafeBench's `safety_label` strings and the label they map to (unsafe = positive = 1).
SAFETY_LABELS: dict[str, int] = {"Safe": 0, "Unsafe": 1}

#: Source kinds in results; `all` pools both.
SOURCE_KINDS: tuple[str, ...] = ("real", "ai")
ALL_SOURCES = "all"

#: UnsafeBench's source names → kind. Other datasets map theirs in the run config.
DEFAULT_SOURCE_MAP: dict[str, str] = {"Laion5B": "real", "Lexica": "ai"}

SPLITS: tuple[str, ...] = ("train", "test")
