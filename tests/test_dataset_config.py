"""A dataset's own ubsafe.toml gives defaults for the data it describes, never authority over the
network, money or where files are read and written; what it sets is said at launch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ubsafe.config import DATASET_SETTINGS, ConfigError, build_config, dotted

REFUSED = {
    "gpt4v.mode": 'gpt4v.mode = "query"',
    "weights_dir": 'weights_dir = "/tmp/shipped-weights"',
    "cache_dir": 'cache_dir = "/tmp/elsewhere"',
    "out": 'out = "/home/user/.ssh"',
    "image_roots": 'image_roots = ["/"]',
    "vlm.response_cache": '[vlm]\nresponse_cache = "/tmp/cache"',
    # the flat form of run.toml files written before the tables: refused the same
    "perspective.adapter": 'perspective_adapter = "/tmp/adapter"',
}


@pytest.fixture
def dataset(demo_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(demo_dir, copy)
    return copy


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_dataset_may_not_set_what_reaches_the_network_or_moves_files(
    dataset: Path, tmp_path: Path, cli, name: str
) -> None:
    toml = dataset / "ubsafe.toml"
    toml.write_text(toml.read_text() + REFUSED[name] + "\n")
    with pytest.raises(ConfigError) as err:
        build_config(dataset=dataset)
    message = str(err.value)
    assert f"{name}: a dataset's own config may not set it" in message
    assert str(toml) in message and "fix: delete those lines" in message

    result = cli("run", "effectiveness", dataset, "--out", tmp_path / "run")
    assert result.exit_code == 1 and name in result.output
    assert not (tmp_path / "run").exists(), "nothing is written"
    assert cli("data", "check", dataset).exit_code == 1


def test_a_dataset_may_not_select_a_classifier_that_queries_an_api(dataset: Path) -> None:
    (dataset / "ubsafe.toml").write_text('encoder = "tiny"\nclassifiers = ["probe-all", "gpt4v"]\n')
    with pytest.raises(ConfigError, match="'gpt4v' sends images to a remote API"):
        build_config(dataset=dataset)


def test_a_dataset_may_tune_a_classifier_but_not_point_it_at_a_file(dataset: Path) -> None:
    toml = dataset / "ubsafe.toml"
    original = toml.read_text()
    toml.write_text(original + '[classifier_options.nudenet]\nmodel_path = "shipped.onnx"\n')
    with pytest.raises(ConfigError) as err:
        build_config(dataset=dataset)
    assert "classifier_options.nudenet.model_path: names a file to read" in str(err.value)
    toml.write_text(original + "[classifier_options.nudenet]\nthreshold = 0.5\n")
    config = build_config(dataset=dataset)
    assert config.classifier_options["nudenet"]["threshold"] == 0.5


def test_the_user_may_still_choose_what_the_dataset_may_not(dataset: Path, tmp_path: Path) -> None:
    user = tmp_path / "mine.toml"
    user.write_text(f'weights_dir = "{tmp_path / "w"}"\nclassifiers = ["gpt4v"]\n')
    config = build_config(dataset=dataset, config_file=user)
    assert config.weights_dir == str(tmp_path / "w") and config.classifiers == ("gpt4v",)
    assert config.encoder == "tiny"  # still the dataset's default


def test_the_settings_taken_from_the_dataset_are_printed_at_launch(
    dataset: Path, tmp_path: Path, cli
) -> None:
    lines: list[str] = []
    config = build_config(dataset=dataset, flags={"shard_size": 50}, announce=lines.append)
    assert lines[0] == f"settings from {dataset / 'ubsafe.toml'}:"
    assert '  encoder = "tiny"' in lines
    assert any(line.startswith("  classifiers = [") for line in lines)
    assert not any("shard_size" in line for line in lines), "overridden by a flag: not taken"
    assert config.shard_size == 50
    assert {line.split("=")[0].strip() for line in lines[1:]} <= {
        dotted(key) for key in DATASET_SETTINGS
    }

    result = cli("data", "check", dataset)
    assert result.exit_code == 0, result.output
    assert "settings from" in result.output and 'encoder = "tiny"' in result.output


def test_the_demo_datasets_own_config_is_allowed(demo_dir: Path) -> None:
    config = build_config(dataset=demo_dir)
    assert config.encoder == "tiny" and "nudenet" in config.classifiers
