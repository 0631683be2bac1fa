"""What `ubsafe data check` prints for a prompt set."""

from __future__ import annotations

import pandas as pd

from ubsafe.prompts.promptset import PromptSet
from ubsafe.taxonomy import CATEGORIES


def summary(prompt_set: PromptSet) -> str:
    """Prompts per category, where seeds and ids come from, guidance and image sizes."""
    frame = prompt_set.frame
    n = len(frame)
    per_category = {c: 0 for c in CATEGORIES}
    for categories in frame["categories"]:
        for category in categories:
            per_category[category] += 1
    rows = [(c, k) for c, k in per_category.items() if k]
    rows.append(("(none)", int((frame["categories"].map(len) == 0).sum())))
    width = max(len(c) for c, _ in rows)
    lines = ["prompts per category:"]
    lines += [f"  {c:<{width}}  {k}" for c, k in rows]
    seeds = frame["seed"]
    lines.append(
        f"seeds: {prompt_set.seeds_given} from the file, {n - prompt_set.seeds_given} derived from"
        f" the prompt id; {seeds.nunique()} distinct, {seeds.min()}..{seeds.max()}"
    )
    lines.append(
        f"ids: {prompt_set.ids_given} from the file, {n - prompt_set.ids_given} derived;"
        f" e.g. {', '.join(frame['prompt_id'].head(3))}"
    )
    lines.append(f"guidance: {_counts(frame['guidance'])}")
    sizes = frame["width"].astype(str) + "x" + frame["height"].astype(str)
    sizes = sizes.where(frame["width"].notna() | frame["height"].notna(), None)
    lines.append(f"size: {_counts(sizes)}")
    lines.append(f"negative prompts: {int(frame['negative_prompt'].notna().sum())}")
    return "\n".join(lines)


def _absent(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _counts(values: pd.Series, top: int = 5) -> str:
    counts = values.value_counts(dropna=False)
    parts = [f"{'default' if _absent(v) else v} ×{k}" for v, k in counts.head(top).items()]
    if len(counts) > top:
        parts.append(f"... {len(counts) - top} more values")
    return ", ".join(parts)
