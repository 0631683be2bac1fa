"""Prompt sets shipped with ubsafe: `builtin:demo` (a dozen benign prompts) for `ubsafe demo`."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

from ubsafe.data.issues import DatasetError, Issue
from ubsafe.prompts.promptset import PromptSet, RawPrompt, build

HERE = Path(__file__).parent


def builtin_prompts(name: str) -> PromptSet:
    """The built-in prompt set `name` (see `readers.BUILTIN`)."""
    from ubsafe.prompts.readers import BUILTIN

    if name not in BUILTIN:
        raise DatasetError(
            f"builtin:{name}",
            [
                Issue(
                    "format",
                    f"builtin:{name}",
                    "is not a built-in prompt set",
                    f"use one of: {', '.join('builtin:' + n for n in BUILTIN)}",
                )
            ],
        )
    path = HERE / BUILTIN[name]
    entries = tomllib.loads(path.read_text(encoding="utf-8"))["prompt"]
    raws = [RawPrompt(where=f"{path.name}:prompt {i}", **entry) for i, entry in enumerate(entries)]
    return build(raws, kind="manifest", source=path, id_prefix="p")


def demo_prompts(directory: str | os.PathLike[str], name: str = "demo") -> Path:
    """Write the built-in prompt set as a JSONL manifest in `directory`; return its path."""
    frame = builtin_prompts(name).frame
    target = Path(directory) / f"{name}_prompts.jsonl"
    lines = []
    for row in frame.to_dict("records"):
        entry = {
            "prompt_id": row["prompt_id"],
            "prompt": row["prompt"],
            "categories": list(row["categories"]),
            "seed": int(row["seed"]),
        }
        lines.append(json.dumps(entry, ensure_ascii=False))
    from ubsafe import atomic

    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(target, "\n".join(lines) + "\n")
    return target
