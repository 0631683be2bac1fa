"""Targets are one table; stages declare what they need, and the launchers read the declarations."""

from __future__ import annotations

import click
import pytest

from ubsafe import targets
from ubsafe.config import ConfigError, build_config
from ubsafe.launch.profiles import parse_profile
from ubsafe.launch.slurm import dependency_kind
from ubsafe.stages import STAGES, Needs, pipeline, target_stages


def test_every_derived_list_is_the_table() -> None:
    from ubsafe.cli.pipeline import TARGET, run
    from ubsafe.cli.submit import submit

    assert tuple(TARGET.choices) == tuple(targets.TARGETS)
    for command in (run, submit):
        text = command.get_help(click.Context(command))
        assert all(name in text for name in targets.TARGETS)
    for name, target in targets.TARGETS.items():
        assert [s.name for s in pipeline(name)] == list(target.stages)
        assert build_config(flags={"target": name}).target == name


def test_a_new_target_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    table = dict(targets.TARGETS)
    table["clean"] = targets.Target("clean", ("embed", "score", "reduce"), "scores only")
    monkeypatch.setattr(targets, "TARGETS", table)
    monkeypatch.setattr(targets, "TARGET_NAMES", tuple(table))
    monkeypatch.setattr("ubsafe.config.TARGET_NAMES", tuple(table))
    assert build_config(flags={"target": "clean"}).target == "clean"
    assert [s.name for s in target_stages("clean")] == ["embed", "score", "reduce", "report"]
    assert targets.runs_stage("clean", "score") and not targets.runs_stage("clean", "compare")
    # effectiveness strictly includes it, so a relaunch keeps effectiveness
    assert targets.widen_target("effectiveness", "clean") == "effectiveness"


def test_unknown_target_is_one_readable_line() -> None:
    with pytest.raises(ConfigError, match="unknown target 'robust'; choose one of embed"):
        build_config(flags={"target": "robust"})


def test_widening_keeps_what_the_run_has() -> None:
    assert targets.widen_target("robustness", "effectiveness") == "robustness"
    assert targets.widen_target("effectiveness", "robustness") == "robustness"
    assert targets.widen_target("all", "robustness") == "robustness"
    assert targets.widen_target("embed", "effectiveness") == "effectiveness"


def test_every_stage_declares_its_needs() -> None:
    for stage in STAGES.values():
        needs = stage.needs
        assert isinstance(needs, Needs) and needs.inputs and needs.outputs, stage.name
        assert stage.name == stage.load().NAME


def test_launchers_read_the_declarations(monkeypatch: pytest.MonkeyPatch) -> None:
    profile = parse_profile({"gpus_per_task": 1}, "site", origin="test")
    gpu = {name for name, stage in STAGES.items() if stage.needs_gpu()}
    assert gpu == {"generate", "embed", "perturb", "finetune", "score", "attack"}
    for name in STAGES:
        assert profile.for_stage(name, {}).gpus_per_task == (1 if name in gpu else 0)
    assert [s.name for s in target_stages("effectiveness")][-2:] == ["reduce", "report"]
    assert dependency_kind("report") == "afterok" and dependency_kind("score") == "afterany"
    # a declaration changes what the launcher asks for, with no stage name in launch/
    fit = STAGES["fit"].load()
    monkeypatch.setattr(fit, "NEEDS", Needs(inputs=("x",), outputs=("y",), gpu=True))
    assert profile.for_stage("fit", {}).gpus_per_task == 1


def test_extras_in_setup_cfg_match_the_table() -> None:
    import configparser
    from pathlib import Path

    from ubsafe.extras import EXTRAS

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(Path(__file__).parents[1] / "setup.cfg")
    extras = cfg["options.extras_require"]
    assert cfg["options"]["python_requires"] == ">=3.11"
    for extra, modules in EXTRAS.items():
        packages = [line.split(">")[0].strip() for line in extras[extra].split("\n") if line]
        assert sorted(packages) == sorted(modules), extra
        assert f"%({extra})s" in extras["all"]
        assert all(p not in cfg["options"]["install_requires"] for p in packages)
    assert "%(all)s" in extras["dev"]


def test_a_missing_extra_is_one_line_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from ubsafe.stages.preflight import check_names

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    with pytest.raises(ConfigError) as info:
        check_names(build_config(flags={"classifiers": "nudenet", "encoder": "tiny"}))
    message = str(info.value)
    assert message.count("\n") == 0
    assert "classifier nudenet needs the optional package(s) onnxruntime" in message
    assert 'pip install "ubsafe[nudenet]"' in message
