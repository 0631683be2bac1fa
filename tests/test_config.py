"""The run config: layering, validation messages, the versioned hash and the relaunch guard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ubsafe.config import CONFIG_VERSION, ConfigError, RunConfig, build_config, execution_fields
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
    for name in execution_fields():
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
