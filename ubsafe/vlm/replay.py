"""Replay of the authors' published VLM responses (HF dataset `yiting/unsafebench_vlm_responses`).

GPT-4V (`gpt-4-vision-preview`) cannot be queried any more; its answers, and LLaVA's and
InstructBLIP's, are published as `<model>/prompt_<i>/<source>_<category>.json`, each a JSON list of
`{"image_fname": "data/UnsafeBench/<split>/images/<row>.png", "response": str | [str, ...]}`
(a list holds InstructBLIP's answers; the first one counts, as in the reference).

The reference joined responses to labels by that path string and silently dropped every image whose
path did not match. Here each path becomes a sample id, `<split>-<row:05d>` (the row index within
the split, the numbering the reference used for its file names), and the join is by id: a requested
id without a response under every prompt, or whose response file names another source or category,
stops the join with counts and examples instead of losing rows.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ubsafe.taxonomy import CATEGORIES, DEFAULT_SOURCE_MAP
from ubsafe.vlm.registry import RESPONSES_REPO
from ubsafe.weights import WeightFile

if TYPE_CHECKING:
    import pandas as pd

    from ubsafe.vlm.converter import ResponseConverter
    from ubsafe.vlm.decision import VLMDecision

#: ubsafe's judge names → the folder names of the published responses.
PUBLISHED_MODELS: dict[str, str] = {
    "gpt4v": "gpt-4v",
    "llava": "llava-v1.5-7b",
    "instructblip": "instructblip-7b",
}
N_PROMPTS = 3

_PATH = re.compile(r"(?:^|[\\/])(?P<split>train|test)[\\/]images[\\/](?P<row>\d+)\.[A-Za-z]+$")


def sample_id_from_path(path: str) -> str:
    """`.../<split>/images/<row>.<ext>` → `<split>-<row:05d>`, whatever the root folder."""
    match = _PATH.search(path)
    if match is None:
        raise ValueError(
            f"cannot read a sample id from image path {path!r}: expected "
            "'.../<train|test>/images/<row>.png' as in the published responses"
        )
    return f"{match['split']}-{int(match['row']):05d}"


def response_files(model: str) -> tuple[WeightFile, ...]:
    """The published files of one judge (`gpt4v`, `llava`, `instructblip`), for fetching."""
    folder = _folder_name(model)
    return tuple(
        WeightFile(
            RESPONSES_REPO, f"{folder}/prompt_{p}/{source}_{category}.json", repo_type="dataset"
        )
        for p in range(N_PROMPTS)
        for source in DEFAULT_SOURCE_MAP
        for category in CATEGORIES
    )


def _folder_name(model: str) -> str:
    if model in PUBLISHED_MODELS:
        return PUBLISHED_MODELS[model]
    if model in PUBLISHED_MODELS.values():
        return model
    raise ValueError(
        f"no published responses for judge {model!r}; choose one of {', '.join(PUBLISHED_MODELS)}"
    )


def read_published_responses(root: str | os.PathLike[str], model: str) -> pd.DataFrame:
    """Every published response of `model` under `root` (the dataset's folder).

    Columns: sample_id, prompt_index, source, category, response, file. `root` is the folder that
    holds `gpt-4v/`, `llava-v1.5-7b/`, ...; with a weights directory that is
    `DIR/hf/yiting/unsafebench_vlm_responses`.
    """
    import pandas as pd

    folder = Path(root) / _folder_name(model)
    files = sorted(folder.glob("prompt_*/*.json"))
    if not files:
        raise FileNotFoundError(
            f"no response files under {folder} (expected prompt_<i>/<source>_<category>.json); "
            f"fetch the dataset {RESPONSES_REPO} (`ubsafe weights fetch`), or point to its folder"
        )
    records = []
    for path in files:
        prompt_index = int(path.parent.name.removeprefix("prompt_"))
        source, _, category = path.stem.partition("_")
        for entry in json.loads(path.read_text(encoding="utf-8")):
            response = entry["response"]
            if isinstance(response, list):
                response = response[0] if response else ""
            records.append(
                (
                    sample_id_from_path(entry["image_fname"]),
                    prompt_index,
                    source,
                    category,
                    "" if response is None else str(response),
                    str(path.relative_to(folder)),
                )
            )
    columns = ["sample_id", "prompt_index", "source", "category", "response", "file"]
    return pd.DataFrame.from_records(records, columns=columns)


class ReplayJoinError(ValueError):
    """Requested sample ids and published responses do not match; nothing was dropped."""


@dataclass
class JoinResult:
    """Responses in request order for the ids that have all prompts; what is missing, and why."""

    sample_ids: list[str]
    responses: list[tuple[str, ...]]
    missing: dict[str, str] = field(default_factory=dict)


def _examples(ids: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(ids[:k])
    return f"{shown}, ..." if len(ids) > k else shown


def join_responses(
    table: pd.DataFrame,
    sample_ids: Sequence[str],
    *,
    categories: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    n_prompts: int = N_PROMPTS,
    strict: bool = True,
) -> JoinResult:
    """Pick each requested id's responses, P0..P{n-1}, by sample id.

    With `categories` / `sources` (the plan's values for each id) the response file's category and
    source must agree too; a disagreement means the two sides number rows differently. `strict`
    raises `ReplayJoinError` on any gap or disagreement with counts and examples; otherwise the
    gaps are returned in `missing` (for skipped.csv), never dropped silently.
    """
    if len(set(sample_ids)) != len(sample_ids):
        raise ValueError("duplicate sample ids in the request; each id must appear once")
    conflicts = _conflicting_duplicates(table)
    if conflicts:
        raise ReplayJoinError(
            f"{len(conflicts)} (sample id, prompt) pairs have different published responses "
            f"(first: {_examples(conflicts)}); the response folder mixes runs"
        )
    table = table.drop_duplicates(["sample_id", "prompt_index"])
    problems: list[str] = []
    missing: dict[str, str] = {}
    requested = set(sample_ids)
    for p in range(n_prompts):
        have = set(table.loc[table["prompt_index"] == p, "sample_id"])
        absent = [s for s in sample_ids if s not in have]
        if absent:
            problems.append(
                f"prompt {p}: {len(absent)} of {len(sample_ids)} sample ids have no response "
                f"(first: {_examples(absent)})"
            )
            for s in absent:
                missing.setdefault(s, f"no published response for prompt {p}")
    for column, expected in (("category", categories), ("source", sources)):
        if expected is None:
            continue
        if len(expected) != len(sample_ids):
            raise ValueError(f"{len(expected)} {column} values for {len(sample_ids)} sample ids")
        want = dict(zip(sample_ids, expected, strict=True))
        rows = table[table["sample_id"].isin(requested)]
        bad = sorted(
            {s for s, v in zip(rows["sample_id"], rows[column], strict=True) if v != want[s]}
        )
        if bad:
            problems.append(
                f"{len(bad)} sample ids have responses filed under another {column} than the "
                "plan's "
                f"(first: {_examples(bad)})"
            )
            for s in bad:
                missing.setdefault(s, f"published response filed under another {column}")
    if problems and strict:
        covered = table["sample_id"].nunique()
        raise ReplayJoinError(
            "published responses do not match the requested sample ids:\n  "
            + "\n  ".join(problems)
            + f"\n({len(sample_ids)} ids requested, {covered} ids in the responses.) Nothing was "
            "dropped. fix: the plan must number UnsafeBench rows as <split>-<row:05d> in the "
            "dataset's own order (the published file names), and the responses must be the "
            f"complete {RESPONSES_REPO} folder of this judge; or replay with strict=False to list "
            "the gaps in skipped.csv"
        )
    kept = [s for s in sample_ids if s not in missing]
    by_key = dict(
        zip(
            zip(table["sample_id"], table["prompt_index"], strict=True),
            table["response"],
            strict=True,
        )
    )
    responses = [tuple(str(by_key[(s, p)]) for p in range(n_prompts)) for s in kept]
    return JoinResult(sample_ids=kept, responses=responses, missing=missing)


def _conflicting_duplicates(table: pd.DataFrame) -> list[str]:
    dupes = table[table.duplicated(["sample_id", "prompt_index"], keep=False)]
    if dupes.empty:
        return []
    counts = dupes.groupby(["sample_id", "prompt_index"])["response"].nunique()
    return [f"{key[0]}/P{key[1]}" for key, n in counts.items() if n > 1]  # type: ignore[index]


def replay(
    table: pd.DataFrame,
    sample_ids: Sequence[str],
    converter: ResponseConverter,
    *,
    seed: int,
    categories: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
) -> VLMDecision:
    """Decisions from published responses: strict join by id, converter, vote, seeded tie-break."""
    import numpy as np

    from ubsafe.vlm.decision import vote

    joined = join_responses(table, sample_ids, categories=categories, sources=sources)
    flat = [text for row in joined.responses for text in row]
    labels = np.asarray(converter.convert(flat)).reshape(len(joined.sample_ids), N_PROMPTS)
    return vote(labels, joined.sample_ids, joined.responses, seed=seed, converter=converter.name)
