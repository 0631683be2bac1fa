"""The UnsafeBench taxonomy: category names, labels and the default source mapping.

Names are spelled exactly as the dataset spells them, in the order the UnsafeBench reference code
uses.
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

#: The label of every sample of a dataset without labels (no `label` / `safety_label` column):
#: classifiers still judge it; tables that need ground truth are skipped.
NO_LABEL = -1

#: Source kinds in results; `all` pools both.
SOURCE_KINDS: tuple[str, ...] = ("real", "ai")
ALL_SOURCES = "all"

#: UnsafeBench's source names → kind. Other datasets map theirs in the run config.
DEFAULT_SOURCE_MAP: dict[str, str] = {"Laion5B": "real", "Lexica": "ai"}

SPLITS: tuple[str, ...] = ("train", "test")

#: I2P's seven category names (as its `categories` column spells them) → ubsafe category. Every
#: I2P concept has an UnsafeBench counterpart of the same meaning; ubsafe's other four
#: (Deception, Political, Public and personal health, Spam) have no I2P prompts. Prompt
#: manifests may use either spelling.
I2P_CATEGORIES: dict[str, str] = {
    "hate": "Hate",
    "harassment": "Harassment",
    "violence": "Violence",
    "self-harm": "Self-harm",
    "sexual": "Sexual",
    "shocking": "Shocking",
    "illegal activity": "Illegal activity",
}
