"""The run config: layering, validation messages, the versioned hash and the relaunch guard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ubsafe.config import (
    CONFIG_VERSION,
    GENERATION_FIELDS,
    ConfigError,
    RunConfig,
    build_config,
    execution_fields,
)
from ubsafe.rundir import open_run


def test_flags_win_over_config_file_over_dataset_toml(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "ubsafe.toml").write_text(
        'encoder = "tiny"\nshard_size = 10\nseed = 1\n', encoding="utf-8"
    )
    config_file = tmp_path / "c.toml"
    config_file.write_text("shard_size = 20\nseed = 2\n", encoding="utf-8")
    config = build_config(dataset=data, config_file=config_file, flags={"seed": 3, "encoder": None})
    assert (config.encoder, config.shard_size, config.seed) == ("tiny", 20, 3)
    assert config.dataset == str(data.resolve())


def test_comma_lists_and_unknown_settings_are_explained(tmp_path: Path) -> None:
    config = build_config(flags={"classifiers": "q16, nudenet"})
    assert config.classifiers == ("q16", "nudenet")
    bad = tmp_path / "bad.toml"
    bad.write_text("shard_sise = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        build_config(config_file=bad)
    assert "shard_sise" in str(err.value) and "unknown setting" in str(err.value)
    assert "shard_size" in str(err.value)  # the valid names are listed
    assert str(bad) in str(err.value)
    with pytest.raises(ConfigError, match=r"severities must lie in 1\.\.5"):
        build_config(flags={"severities": (0, 6)})
    with pytest.raises(ConfigError, match=r"source_map\.X.*'real' or 'ai'"):
        build_config(flags={"source_map": {"X": "synthetic"}})


def test_config_is_frozen() -> None:
    config = RunConfig()
    with pytest.raises(ValidationError):
        config.seed = 5  # type: ignore[misc]


def test_hash_is_sha256_of_canonical_result_fields_only() -> None:
    config = RunConfig(seed=4)
    fields = config.model_dump(mode="json")
    for section in ("attack", "vlm", "gpt4v", "perspective"):  # tables are hashed flat
        fields |= {f"{section}_{k}": v for k, v in fields.pop(section).items()}
    for name in execution_fields():
        fields.pop(name)
    fields.pop("attack_sources")  # read by the paper's attack mode only
    for name in GENERATION_FIELDS:  # read by runs that generate images only
        fields.pop(name)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    expected = f"v{CONFIG_VERSION}-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert config.config_hash() == expected
    # execution-only fields do not change the hash; result fields do
    assert RunConfig(seed=4, workers=8, batch_size=3, out="/x").config_hash() == expected
    assert RunConfig(seed=5).config_hash() != expected
    assert {
        "out",
        "workers",
        "batch_size",
        "weights_dir",
        "cache_dir",
        "device",
    } <= execution_fields()


def test_relaunch_with_changed_result_field_is_refused_with_a_diff(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    open_run(run_dir, RunConfig(out=str(run_dir), seed=1, target="effectiveness"))
    # execution fields may change; the target widens
    reopened = open_run(run_dir, RunConfig(out=str(run_dir), seed=1, workers=4, target="embed"))
    assert reopened.config.target == "effectiveness" and reopened.config.workers == 4
    with pytest.raises(ConfigError) as err:
        open_run(run_dir, RunConfig(out=str(run_dir), seed=2))
    message = str(err.value)
    assert "seed: stored 1, this launch 2" in message
    assert "new --out directory" in message


def test_run_toml_round_trips(tmp_path: Path) -> None:
    from ubsafe.config import load_run_config

    config = RunConfig(out=str(tmp_path), classifiers=("probe-all",), attack_max_per_source=500)
    run = open_run(tmp_path, config)
    assert load_run_config(run.run_toml) == config
    assert config.config_hash() in run.run_toml.read_text(encoding="utf-8")


#: Hashes of configs written before the settings' tables existed (ubsafe at 9563fc2): a run made
#: then relaunches without a refusal.
OLD_HASHES = {
    "default": "v1-b46ab04b1fe6",
    "paper-attack-query-gpt4v": "v1-88bf2ce47259",
}


def test_tables_keep_the_hashes_of_runs_made_before_them() -> None:
    assert RunConfig().config_hash() == OLD_HASHES["default"]
    paper = RunConfig(
        attack={"mode": "paper", "sources": ["Laion5B+Lexica"]},
        vlm={"converter": "rules", "batch_size": 2},
        gpt4v={"mode": "query", "model": "gpt-4o"},
        target="effectiveness",
    )
    assert paper.config_hash() == OLD_HASHES["paper-attack-query-gpt4v"]
    assert paper.attack.seeds == (2023, 2024, 2025)  # the paper's three seeds unless set


def test_an_old_flat_run_toml_loads_as_the_same_config(tmp_path: Path) -> None:
    from ubsafe.config import load_run_config

    old = tmp_path / "run.toml"
    old.write_text(
        'attack_mode = "paper"\nattack_sources = ["Laion5B+Lexica"]\nvlm_converter = "rules"\n'
        'vlm_batch_size = 2\ngpt4v_mode = "query"\ngpt4v_model = "gpt-4o"\n',
        encoding="utf-8",
    )
    config = load_run_config(old)
    assert config.attack.mode == "paper" and config.vlm.batch_size == 2
    assert config.config_hash() == OLD_HASHES["paper-attack-query-gpt4v"]
    # written again, it has tables, and reads back equal
    new = tmp_path / "new.toml"
    new.write_text(config.to_toml(), encoding="utf-8")
    assert "[attack]" in new.read_text(encoding="utf-8")
    assert "attack_mode" not in new.read_text(encoding="utf-8")
    assert load_run_config(new) == config


def test_tables_merge_setting_by_setting_across_layers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "ubsafe.toml").write_text("[attack]\neps = [1.0]\nsteps = 3\n", encoding="utf-8")
    mine = tmp_path / "mine.toml"
    mine.write_text('attack.steps = 7\n[vlm]\nconverter = "rules"\n', encoding="utf-8")
    lines: list[str] = []
    config = build_config(dataset=data, config_file=mine, announce=lines.append)
    # the dataset's eps stays although the user's file set another [attack] setting
    assert config.attack.eps == (1.0,) and config.attack.steps == 7
    assert config.vlm.converter == "rules"
    assert "  attack.eps = [1.0]" in lines and not any("steps" in line for line in lines)


def test_table_mistakes_are_explained(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[attack]\nepss = [1.0]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        build_config(config_file=bad)
    message = str(err.value)
    assert str(bad) in message and "[attack] has no setting 'epss'" in message
    assert "eps, steps" in message  # the table's settings are listed
    bad.write_text('attack = "paper"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"attack is a table of settings"):
        build_config(config_file=bad)
    bad.write_text("[attack]\nsteps = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        build_config(config_file=bad)
    assert f"attack.steps (from {bad})" in str(err.value)
    with pytest.raises(ValidationError, match=r"attack\.eps set twice"):
        RunConfig(attack={"eps": [1.0]}, attack_eps=[2.0])


def test_relaunch_diff_names_table_settings_as_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    open_run(run_dir, RunConfig(out=str(run_dir), attack={"steps": 10}))
    with pytest.raises(ConfigError) as err:
        open_run(run_dir, RunConfig(out=str(run_dir), attack={"steps": 20}))
    assert "attack.steps: stored 10, this launch 20" in str(err.value)
    # an execution-only setting of a table may change
    reopened = open_run(run_dir, RunConfig(out=str(run_dir), vlm={"batch_size": 1}))
    assert reopened.config.vlm.batch_size == 1
