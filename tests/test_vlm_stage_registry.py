"""The VLM judges in the registry, the command line and the preflight checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from vlm_stage_fixtures import SIDE, write_dataset

from ubsafe.classifiers import get_entry, list_classifiers
from ubsafe.taxonomy import CATEGORIES
from ubsafe.testing import tiny

JUDGES = ("llava", "instructblip", "gpt4v", "perspective-llava")


def test_judges_are_image_classifiers_of_all_categories() -> None:
    for name in JUDGES:
        entry = get_entry(name)
        assert entry.input == "image" and entry.encoder == "none" and not entry.fitted
        assert entry.categories == CATEGORIES
    fast = get_entry("perspective-fast")
    assert (fast.input, fast.encoder, fast.fitted, fast.attackable) == (
        "embedding",
        "run",
        True,
        True,
    )
    assert fast.train_sources == ("real", "ai")
    # Trained on UnsafeBench's train split: both PerspectiveVision variants judge test rows only.
    assert get_entry("perspective-llava").scored_splits == ("test",)
    assert fast.scored_splits == ("test",)
    assert get_entry("llava").scored_splits == ("train", "test")


def test_classifiers_command_lists_them_with_their_weights(cli, tmp_path: Path) -> None:
    tiny.save_tiny_llava(tmp_path, image_size=SIDE, patch=16)
    tiny.save_tiny_converter(tmp_path)
    result = cli("classifiers", "--weights-dir", tmp_path)
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "present" in lines["llava"] and "all 11" in lines["llava"]
    assert "present" in lines["perspective-llava"]
    assert "missing 8/12" in lines["instructblip"]  # only the converter's 4 files are here
    assert "present" in lines["gpt4v"]  # its converter; the published answers are data
    assert "fitted in the run" in lines["perspective-fast"]


def test_a_missing_judge_stops_the_run_before_any_job(tmp_path: Path) -> None:
    from ubsafe.cli.pipeline import prepare
    from ubsafe.config import build_config
    from ubsafe.weights import MissingWeightsError

    dataset = write_dataset(tmp_path / "data", 3, 2)
    config = build_config(
        dataset=dataset,
        flags={
            "out": str(tmp_path / "run"),
            "encoder": "tiny",
            "classifiers": "llava",
            "weights_dir": str(tmp_path / "empty"),
        },
    )
    with pytest.raises(MissingWeightsError) as err:
        prepare(config)
    message = str(err.value)
    assert "llava-hf/llava-1.5-7b-hf/config.json" in message
    assert "yiting/converter/LLM_output_converter.pt" in message
    assert "ubsafe weights fetch" in message
    assert not (tmp_path / "run" / "plan.parquet").exists()


def test_weights_fetch_takes_judges_only_when_named() -> None:
    from ubsafe.cli.weights import files_to_fetch

    default = {(f.repo, f.filename) for f in files_to_fetch([], None)}
    assert ("yiting/Q16", "prompts.p") in default
    assert not any(
        repo.startswith(("llava-hf", "Salesforce", "yiting/converter")) for repo, _ in default
    )

    llava = {(f.repo, f.filename) for f in files_to_fetch([], ["llava"])}
    shards = {f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)}
    assert {("llava-hf/llava-1.5-7b-hf", s) for s in shards} <= llava
    assert ("yiting/converter", "LLM_output_converter.pt") in llava
    assert ("FacebookAI/roberta-base", "merges.txt") in llava

    gpt4v = files_to_fetch([], ["gpt4v"])
    published = [f for f in gpt4v if f.repo == "yiting/unsafebench_vlm_responses"]
    assert len(published) == 3 * 2 * 11 and {f.repo_type for f in published} == {"dataset"}
    assert "gpt-4v/prompt_2/Lexica_Spam.json" in {f.filename for f in published}
    # Every file a registry entry checks is one that fetch downloads.
    for name in JUDGES:
        fetched = set(files_to_fetch([], [name]))
        assert set(get_entry(name).weights) <= fetched


def test_demo_defaults_include_the_fast_variant(demo_dir: Path) -> None:
    from ubsafe.config import build_config

    assert "perspective-fast" in build_config(dataset=demo_dir).classifiers
    assert all(
        get_entry(n).fitted or not get_entry(n).weights
        for n in build_config(dataset=demo_dir).classifiers
    )


def test_every_registry_module_loads_lightly() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ubsafe.vlm.classifier, ubsafe.classifiers.perspective_fast;"
        "import ubsafe.stages.finetune;"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    env_path = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": env_path})
    assert {e.name for e in list_classifiers()} >= set(JUDGES)


def test_check_config_names_missing_answers_and_adapters(tmp_path: Path) -> None:
    """What a preflight can refuse before any job, besides weight files."""
    from ubsafe.classifiers import FittedWeightsMissingError
    from ubsafe.config import ConfigError, RunConfig
    from ubsafe.vlm.classifier import check_config

    replay = RunConfig(classifiers=("gpt4v",), weights_dir=str(tmp_path))
    with pytest.raises(ConfigError) as err:
        check_config(replay)
    assert "hf/yiting/unsafebench_vlm_responses/gpt-4v" in str(err.value)
    assert "ubsafe data fetch vlm-responses" in str(err.value)
    published = tmp_path / "answers" / "gpt-4v" / "prompt_0"
    published.mkdir(parents=True)
    (published / "Laion5B_Hate.json").write_text("[]")
    answers = replay.vlm.model_copy(update={"responses_dir": str(tmp_path / "answers")})
    check_config(replay.model_copy(update={"vlm": answers}))
    query = replay.gpt4v.model_copy(update={"mode": "query", "model": "x"})
    check_config(replay.model_copy(update={"gpt4v": query}))

    adapter = RunConfig(classifiers=("perspective-llava",), perspective_adapter=str(tmp_path))
    with pytest.raises(FittedWeightsMissingError, match=r"holds no adapter_config\.json"):
        check_config(adapter)
