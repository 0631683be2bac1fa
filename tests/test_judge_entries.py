"""Judges are registry entries: behaviour comes from their `[judge]` table, never their names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ubsafe.classifiers import get_entry, list_classifiers
from ubsafe.classifiers.registry import RegistryError, parse_entry, run_weight_files
from ubsafe.config import RunConfig
from ubsafe.vlm.registry import CONVERTER_FILES

PACKAGE = Path(__file__).parents[1] / "ubsafe"


def _names_in(node: ast.AST) -> set[str]:
    values = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    return {v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)}


def test_no_condition_names_a_classifier() -> None:
    """No comparison or membership test in the package names a registry classifier: what differs
    between classifiers is data in their entries."""
    names = {entry.name for entry in list_classifiers()}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                used = set().union(*(_names_in(x) for x in (node.left, *node.comparators)))
            elif isinstance(node, ast.match_case):
                used = _names_in(node.pattern.value) if hasattr(node.pattern, "value") else set()
            else:
                continue
            if used & names:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {used & names}")
    assert found == []


def test_the_weight_list_follows_the_entry_and_the_settings() -> None:
    converter = list(CONVERTER_FILES)
    rules = RunConfig(vlm_converter="rules")
    assert run_weight_files("gpt4v", rules) == []
    assert run_weight_files("gpt4v", RunConfig()) == converter
    llava = list(get_entry("llava").weights)
    assert run_weight_files("llava", rules) == llava
    assert run_weight_files("llava", RunConfig()) == llava + converter
    # PerspectiveVision parses its answers: never the converter
    assert run_weight_files("perspective-llava", RunConfig()) == list(
        get_entry("perspective-llava").weights
    )
    assert run_weight_files("nudenet", RunConfig()) == []


def test_preflight_with_the_rules_does_not_ask_for_the_converter(tmp_path: Path) -> None:
    from ubsafe.stages.preflight import check_weights

    config = RunConfig(
        classifiers=("gpt4v",),
        gpt4v_mode="query",
        gpt4v_model="m",
        vlm_converter="rules",
        encoder="tiny",
        weights_dir=str(tmp_path),
    )
    check_weights(config)  # nothing to download
    from ubsafe.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=r"LLM_output_converter\.pt"):
        check_weights(RunConfig(**{**config.model_dump(), "vlm": {"converter": "roberta"}}))


def test_gpt4v_without_its_answers_is_a_one_line_error(tmp_path: Path, cli) -> None:
    from vlm_stage_fixtures import write_dataset

    dataset = write_dataset(tmp_path / "data", 2, 2)
    result = cli(
        "run", "effectiveness", dataset, "--out", tmp_path / "run", "--classifiers", "gpt4v",
        "--weights-dir", tmp_path / "weights", "--encoder", "tiny",
    )  # fmt: skip
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: gpt4v replays the published answers")
    assert "ubsafe data fetch vlm-responses" in errors[0]


def test_a_judge_entry_is_checked_by_its_typed_model(tmp_path: Path) -> None:
    source = (PACKAGE / "classifiers" / "registry" / "llava.toml").read_text(encoding="utf-8")
    bad = tmp_path / "llava.toml"
    bad.write_text(source.replace('attacks = ["fgsm", "pgd"]', 'attacks = ["cw"]'), "utf-8")
    with pytest.raises(RegistryError, match=r"llava.toml: key 'judge.attacks.0'"):
        parse_entry(bad)
    bad.write_text(source.replace('attacks = ["fgsm", "pgd"]', "attacks = []"), "utf-8")
    with pytest.raises(RegistryError, match="attackable exactly when it lists attacks"):
        parse_entry(bad)
    bad.write_text(source.replace('loader = "llava"', 'loader = "llava"\ncolour = 1'), "utf-8")
    with pytest.raises(RegistryError, match=r"judge\.colour"):
        parse_entry(bad)


def test_what_the_stages_ask_an_entry() -> None:
    from ubsafe.stages.finetune import trained

    query = RunConfig(gpt4v_mode="query", gpt4v_model="m")
    assert get_entry("gpt4v").judge.mode(RunConfig()) == "replay"
    assert get_entry("gpt4v").judge.mode(query) == "query"
    assert not get_entry("gpt4v").judge.runs_model_here(query)
    assert get_entry("llava").judge.runs_model_here(query)
    assert trained(RunConfig(classifiers=("perspective-llava", "llava"))) == ("perspective-llava",)
    assert trained(RunConfig(classifiers=("perspective-llava",), perspective_adapter="x")) == ()
