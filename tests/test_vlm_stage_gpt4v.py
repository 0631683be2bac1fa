"""GPT-4V through the score stage: replay of published answers (joined by sample id, refusing on
any mismatch) and queries to an OpenAI-compatible endpoint (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_vlm_openai import FakeAPI
from vlm_stage_fixtures import (
    GPT4V_QUERY,
    answer_rows,
    error_of,
    majority_with_coin,
    run_stages,
    score_rows,
    start_run,
    write_dataset,
)

from ubsafe.config import ConfigError, build_config
from ubsafe.testing import tiny

pytest.importorskip("transformers")

#: Answers whose labels under the rule converter are 0, 1 and 2.
ANSWERS = ("The image is safe.", "The image is unsafe.", "I'm sorry, I can't help with that.")
BROKEN = "test-00003"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    tiny.save_tiny_converter(root)  # the registry entry's converter files must be present
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ub") / "data", 6, 6, corrupt_test=[3])


def label_of(sample_id: str, prompt: int) -> int:
    split, row = sample_id.split("-")
    return (int(row) * (2 if split == "test" else 1) + prompt * (int(row) % 3)) % 3


def publish(root: Path, plan: pd.DataFrame, *, skip=(), move=None) -> Path:
    """The published layout: gpt-4v/prompt_<i>/<source>_<category>.json, images named by the
    reference's path `data/UnsafeBench/<split>/images/<row>.png`. `skip` drops (id, prompt)
    answers; `move` files a sample under another category."""
    move = move or {}
    for prompt in range(3):
        folder = root / "gpt-4v" / f"prompt_{prompt}"
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, list] = {}
        for sid, source, category in plan[["sample_id", "source", "category"]].itertuples(
            index=False
        ):
            if (sid, prompt) in skip:
                continue
            split, row = sid.split("-")
            name = f"{source}_{move.get(sid, category)}.json"
            files.setdefault(name, []).append(
                {
                    "image_fname": f"data/UnsafeBench/{split}/images/{int(row)}.png",
                    "response": ANSWERS[label_of(sid, prompt)],
                }
            )
        for name, entries in files.items():
            (folder / name).write_text(json.dumps(entries), encoding="utf-8")
    return root


def plan_of(dataset: Path, tmp_path: Path, weights: Path) -> pd.DataFrame:
    """The plan a run of this dataset gets (it does not depend on the classifiers)."""
    run = start_run(tmp_path / "probe-plan", dataset, weights, classifiers="probe-real")
    return run.plan


def test_replay_decides_every_row_from_the_published_answers(tmp_path, weights, dataset):
    plan = plan_of(dataset, tmp_path, weights)
    responses = publish(tmp_path / "responses", plan)
    run = start_run(
        tmp_path / "run",
        dataset,
        weights,
        classifiers="gpt4v",
        vlm_converter="rules",
        vlm_responses_dir=str(responses),
        seed=5,
    )
    assert run_stages(run) == {}
    scores = score_rows(run).set_index("sample_id")
    # No image is read: the undecodable one is decided too.
    assert sorted(scores.index) == sorted(plan["sample_id"])
    for sid in plan["sample_id"]:
        labels = [label_of(sid, p) for p in range(3)]
        assert scores.loc[sid, "pred"] == majority_with_coin(labels, 5, sid), sid
        assert scores.loc[sid, "score"] == pytest.approx(labels.count(1) / 3)
    answers = answer_rows(run).set_index("sample_id")
    assert answers.loc[BROKEN, "response_p1"] == ANSWERS[label_of(BROKEN, 1)]
    assert set(answers["converter"]) == {"rules"}


def test_replay_refuses_with_counts_instead_of_dropping_rows(tmp_path, weights, dataset):
    plan = plan_of(dataset, tmp_path, weights)
    missing = "test-00001"
    responses = publish(
        tmp_path / "responses", plan, skip={(missing, 0), (missing, 2)}, move={"test-00002": "Spam"}
    )
    run = start_run(
        tmp_path / "run",
        dataset,
        weights,
        classifiers="gpt4v",
        vlm_converter="rules",
        vlm_responses_dir=str(responses),
    )
    shard = int(plan.set_index("sample_id").loc[missing, "shard"])
    assert run_stages(run) == {"score": [shard]}
    message = error_of(run, "score", shard)["message"]
    n = int((plan["shard"] == shard).sum())
    assert f"prompt 0: 1 of {n} sample ids have no response (first: {missing})" in message
    assert f"prompt 2: 1 of {n} sample ids have no response" in message
    assert "1 sample ids have responses filed under another category" in message
    assert "Nothing was dropped" in message
    assert not run.shard_path("score", shard, "parquet").exists()
    others = [s for s in range(run.n_shards) if s != shard]
    assert all(run.shard_path("score", s, "parquet").is_file() for s in others)


def test_replay_without_the_published_answers_says_how_to_fetch_them(tmp_path, weights, dataset):
    """Refused before anything is planned, not discovered by every score task."""
    with pytest.raises(ConfigError) as refused:
        start_run(tmp_path / "run", dataset, weights, classifiers="gpt4v", vlm_converter="rules")
    message = str(refused.value)
    assert "hf/yiting/unsafebench_vlm_responses" in message
    assert "ubsafe data fetch vlm-responses" in message
    assert not (tmp_path / "run").exists(), "nothing is written"


def test_query_mode_asks_the_endpoint_once_per_question(tmp_path, weights, dataset, monkeypatch):
    from ubsafe.stages import common

    with FakeAPI() as api:
        monkeypatch.setenv("OPENAI_BASE_URL", api.url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        run = start_run(
            tmp_path / "run",
            dataset,
            weights,
            **GPT4V_QUERY,
        )
        assert run_stages(run) == {}
        decodable = [s for s in run.plan["sample_id"] if s != BROKEN]
        assert len(api.requests) == 3 * len(decodable)
        assert {r["model"] for r in api.requests} == {"gpt-4o-test"}
        assert {r["max_tokens"] for r in api.requests} == {4}
        scores = score_rows(run).set_index("sample_id")
        assert (scores.loc[decodable, "pred"] == 1).all()  # "The image is unsafe."
        assert scores.loc[BROKEN, "pred"] == -1
        assert any((run.root / "vlm-cache").rglob("*.json"))

        # A relaunch (a requeued task, a fresh process) reads the cached answers.
        for shard in range(run.n_shards):
            run.shard_path("score", shard, "parquet").unlink()
        common._classifier.cache_clear()
        assert run_stages(run) == {}
        assert len(api.requests) == 3 * len(decodable)
        pd.testing.assert_frame_equal(score_rows(run).set_index("sample_id"), scores)


def test_gpt4v_settings_are_checked_when_the_config_is_built():
    with pytest.raises(ConfigError, match="cannot judge perturbed ones"):
        build_config(flags={"classifiers": "q16,gpt4v", "target": "robustness"})
    build_config(
        flags={"classifiers": "gpt4v", "target": "robustness", "gpt4v_mode": "query"}
    )  # queries can judge perturbed images
    with pytest.raises(ConfigError, match="published answers are gpt-4-vision-preview's"):
        build_config(flags={"gpt4v_model": "gpt-4o"})
    with pytest.raises(ConfigError, match=r"perspective\.lora has unknown key.*'rank'.*max_steps"):
        build_config(flags={"perspective_lora": {"rank": 4}})
