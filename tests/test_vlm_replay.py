"""Replay of published VLM responses: joined by sample id, refusing instead of dropping rows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from ubsafe.vlm.converter import RuleConverter, rule_label
from ubsafe.vlm.decision import tie_break
from ubsafe.vlm.replay import (
    ReplayJoinError,
    join_responses,
    read_published_responses,
    replay,
    response_files,
    sample_id_from_path,
)

ANSWERS = ["The image is safe.", "The image is unsafe.", "I cannot tell."]


def _plan() -> pd.DataFrame:
    """Ten rows over two splits, sources and categories, as a plan numbers them."""
    rows = []
    for split, n in (("train", 6), ("test", 4)):
        for row in range(n):
            rows.append(
                {
                    "sample_id": f"{split}-{row:05d}",
                    "source": "Laion5B" if row % 2 == 0 else "Lexica",
                    "category": "Hate" if row < 3 else "Public and personal health",
                    "label": row % 2,
                }
            )
    return pd.DataFrame(rows)


def _publish(
    root: Path, plan: pd.DataFrame, *, model: str = "gpt-4v", skip=(), image_root="data/UnsafeBench"
):
    """Write responses in the published layout: <model>/prompt_<i>/<source>_<category>.json."""
    for prompt in range(3):
        groups = plan.groupby(["source", "category"], sort=False)
        for (source, category), group in groups:
            entries = []
            for sample_id in group["sample_id"]:
                if (sample_id, prompt) in skip:
                    continue
                split, row = sample_id.split("-")
                answer = ANSWERS[(int(row) + prompt) % 3]
                # InstructBLIP's answers are published as lists.
                response = [answer] if model == "instructblip-7b" else answer
                entries.append(
                    {
                        "image_fname": f"{image_root}/{split}/images/{int(row)}.png",
                        "response": response,
                    }
                )
            path = root / model / f"prompt_{prompt}" / f"{source}_{category}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(entries))


def test_sample_ids_from_published_paths():
    assert sample_id_from_path("data/UnsafeBench/train/images/42.png") == "train-00042"
    assert sample_id_from_path("/scratch/u/x/UnsafeBench/test/images/2036.png") == "test-02036"
    with pytest.raises(ValueError, match=r"cannot read a sample id from image path 'a/b\.png'"):
        sample_id_from_path("a/b.png")


def test_response_file_list_is_the_published_grid():
    files = response_files("gpt4v")
    assert len(files) == 3 * 2 * 11
    assert files[0].repo == "yiting/unsafebench_vlm_responses"
    assert files[0].repo_type == "dataset"
    assert "gpt-4v/prompt_2/Lexica_Public and personal health.json" in {f.filename for f in files}


@pytest.mark.parametrize("model", ["gpt-4v", "instructblip-7b"])
def test_replay_joins_by_id_whatever_the_image_root(tmp_path, model):
    plan = _plan()
    # The authors' paths under another root: a path join would find nothing.
    _publish(tmp_path, plan, model=model, image_root="/home/someone/UnsafeBench")
    table = read_published_responses(tmp_path, model)
    assert len(table) == 3 * len(plan)
    order = plan.sample_id.tolist()[::-1]  # any request order
    decision = replay(
        table,
        order,
        RuleConverter(),
        seed=9,
        categories=plan.set_index("sample_id").loc[order, "category"].tolist(),
        sources=plan.set_index("sample_id").loc[order, "source"].tolist(),
    )
    assert decision.sample_ids == tuple(order)
    for i, sample_id in enumerate(order):
        row = int(sample_id.split("-")[1])
        texts = [ANSWERS[(row + p) % 3] for p in range(3)]
        assert decision.responses[i] == tuple(texts)
        labels = [rule_label(t) for t in texts]
        winner = Counter(labels).most_common(1)[0][0]
        assert decision.pred[i] == (tie_break(9, sample_id) if winner == 2 else winner)


def test_missing_responses_are_refused_with_counts(tmp_path):
    plan = _plan()
    _publish(tmp_path, plan, skip={("train-00003", 1), ("test-00002", 1), ("test-00002", 2)})
    table = read_published_responses(tmp_path, "gpt4v")
    with pytest.raises(ReplayJoinError) as err:
        join_responses(table, plan.sample_id.tolist())
    message = str(err.value)
    assert (
        "prompt 1: 2 of 10 sample ids have no response (first: train-00003, test-00002)" in message
    )
    assert "prompt 2: 1 of 10 sample ids have no response (first: test-00002)" in message
    assert "Nothing was dropped" in message and "<split>-<row:05d>" in message
    # Non-strict: the gaps come back named, for skipped.csv.
    result = join_responses(table, plan.sample_id.tolist(), strict=False)
    assert result.missing == {
        "train-00003": "no published response for prompt 1",
        "test-00002": "no published response for prompt 1",
    }
    assert len(result.sample_ids) == 8 and len(result.responses) == 8


def test_rows_numbered_differently_are_refused(tmp_path):
    """Responses filed under another category than the plan's mean the numbering differs."""
    plan = _plan()
    _publish(tmp_path, plan)
    table = read_published_responses(tmp_path, "gpt4v")
    shifted = plan.copy()
    shifted.loc[shifted.sample_id == "train-00001", "category"] = "Spam"
    with pytest.raises(
        ReplayJoinError, match=r"1 sample ids have responses filed under another category"
    ):
        join_responses(table, shifted.sample_id.tolist(), categories=shifted.category.tolist())
    ids_not_published = ["train-00099", *plan.sample_id]
    with pytest.raises(ReplayJoinError, match=r"prompt 0: 1 of 11 sample ids have no response"):
        join_responses(table, ids_not_published)


def test_conflicting_duplicate_responses_are_refused(tmp_path):
    plan = _plan()
    _publish(tmp_path, plan)
    table = read_published_responses(tmp_path, "gpt4v")
    clash = table.iloc[[0]].assign(response="something else")
    with pytest.raises(ReplayJoinError, match="different published responses"):
        join_responses(pd.concat([table, clash]), plan.sample_id.tolist())
    # An identical duplicate is harmless.
    same = join_responses(pd.concat([table, table.iloc[[0]]]), plan.sample_id.tolist())
    assert len(same.sample_ids) == len(plan)


def test_missing_folder_names_the_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="yiting/unsafebench_vlm_responses"):
        read_published_responses(tmp_path, "llava")
    with pytest.raises(ValueError, match="no published responses for judge 'nudenet'"):
        read_published_responses(tmp_path, "nudenet")
