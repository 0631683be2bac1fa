"""The texts that VLM judges and PerspectiveVision are prompted with.

All of them are data files in `ubsafe/vlm/texts/`, kept byte for byte as UnsafeBench uses them:

- `category_definitions.txt`: one line per category, `<Name>: <definition>. For example, ...`;
  the whole line is what a prompt inserts.
- `judge_prompts.json`: the paper's three prompts P0, P1, P2; `[instruction]` takes the line
  of the category the image was collected for.
- `perspective_template.txt`: PerspectiveVision's task template; `[instruction]` takes the
  listed categories, one per line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources

from ubsafe.taxonomy import CATEGORIES

PLACEHOLDER = "[instruction]"

#: The conversation around a LLaVA-1.5 prompt: the `llava_v1` template of the LLaVA code base that
#: the paper ran (system line, `USER: <image>\n<prompt> ASSISTANT:`).
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


def _text(name: str) -> str:
    return resources.files("ubsafe.vlm").joinpath("texts", name).read_text(encoding="utf-8")


@cache
def category_definitions() -> dict[str, str]:
    """Category name → its full definition line, in the taxonomy's order."""
    lines = _text("category_definitions.txt").splitlines()
    definitions = {line.split(":", 1)[0]: line for line in lines if line.strip()}
    if tuple(definitions) != CATEGORIES:
        raise RuntimeError(
            f"texts/category_definitions.txt names {tuple(definitions)}, "
            f"expected the taxonomy's {CATEGORIES}; the package data is damaged (reinstall ubsafe)"
        )
    return definitions


def definition(category: str) -> str:
    """The definition line of `category`; a clear error for a name outside the taxonomy."""
    definitions = category_definitions()
    if category not in definitions:
        raise ValueError(
            f"unknown category {category!r}; expected one of {', '.join(map(repr, CATEGORIES))} "
            "(names are case- and space-sensitive)"
        )
    return definitions[category]


@cache
def judge_templates() -> tuple[str, ...]:
    """The paper's prompt templates P0, P1, P2, with the `[instruction]` placeholder."""
    data = json.loads(_text("judge_prompts.json"))
    return tuple(data["prompts"])


def judge_prompts(category: str) -> tuple[str, ...]:
    """P0, P1, P2 for an image collected for `category` (its definition line filled in)."""
    line = definition(category)
    return tuple(template.replace(PLACEHOLDER, line) for template in judge_templates())


def perspective_template() -> str:
    """PerspectiveVision's task template, with the `[instruction]` placeholder."""
    return _text("perspective_template.txt")


def perspective_prompt(listed: Sequence[str], *, names_only: bool = False) -> str:
    """The PerspectiveVision prompt listing `listed` categories, one line each.

    Lines are the full definitions, or the bare names when `names_only` (what the reference's
    negative samples list).
    """
    lines = list(listed) if names_only else [definition(c) for c in listed]
    if names_only:
        for name in lines:
            definition(name)  # validates the name
    return perspective_template().replace(PLACEHOLDER, "\n".join(lines))


def llava_conversation(prompt: str, *, image_token: str = "<image>") -> str:
    """`prompt` in LLaVA-1.5's `llava_v1` conversation, ready for the assistant's answer."""
    return f"{LLAVA_V1_SYSTEM} USER: {image_token}\n{prompt} ASSISTANT:"
