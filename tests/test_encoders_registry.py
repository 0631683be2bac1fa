"""The encoder registry: entries, their weight files, and the identity their cache is keyed by."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ubsafe.encoders import (
    UnknownEncoderError,
    add_registry_path,
    cache_key,
    entry_identity,
    get_entry,
    identity,
    list_encoders,
    missing_weights,
    registry,
    weight_files,
)
from ubsafe.weights import WeightFile

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registry paths added inside a test are gone after it."""
    monkeypatch.setattr(registry, "_extra_paths", list(registry._extra_paths))
    registry._entry_files.cache_clear()
    yield
    monkeypatch.undo()
    registry._entry_files.cache_clear()


def fake_hub_cache(cache: Path, repo: str, filenames: list[str]) -> None:
    """A Hugging Face cache holding `filenames` of `repo`, as hf_hub_download lays it out."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in filenames:
        (snapshot / name).write_bytes(b"")


def test_builtin_entries_are_listed_and_valid() -> None:
    keys = list_encoders()
    assert {"vit-l-14-openai", "sd-checker", "tiny"} <= set(keys)
    for key in keys:
        assert get_entry(key).key == key


def test_vit_l_14_openai_follows_open_clips_table_for_the_openai_tag() -> None:
    import open_clip

    entry = get_entry("vit-l-14-openai")
    table = open_clip.get_pretrained_cfg("ViT-L-14", "openai")
    config = open_clip.get_model_config("ViT-L-14")
    assert entry.model == "ViT-L-14" and entry.pretrained == "openai"
    assert entry.quick_gelu is True and table["quick_gelu"] is True
    assert "quick_gelu" not in config  # why the entry must force it
    assert weight_files("vit-l-14-openai") == [
        WeightFile("timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors")
    ]
    assert table["hf_hub"] == "timm/vit_large_patch14_clip_224.openai/"
    p = entry.preprocess
    assert (p.mean, p.std) == (tuple(table["mean"]), tuple(table["std"]))
    assert (p.interpolation, p.resize_mode) == (table["interpolation"], table["resize_mode"])
    assert p.resize == p.crop == config["vision_cfg"]["image_size"] == 224
    assert entry.embed_dim == config["embed_dim"] == 768


@pytest.mark.parametrize(
    ("model", "tag", "key"),
    [("ViT-L-14", "openai", "vit-l-14-openai"), ("ViT-B-32", "laion2b_s34b_b79k", None)],
)
def test_weight_file_is_the_one_open_clip_downloads_for_the_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, tag: str, key: str | None
) -> None:
    import huggingface_hub.constants
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    [weights] = weight_files(key or f"openclip:{model}:{tag}")
    # Both candidates in an offline cache: open_clip's own download code picks one of them.
    fake_hub_cache(tmp_path, weights.repo, ["open_clip_pytorch_model.bin", weights.filename])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    chosen = download_pretrained(get_pretrained_cfg(model, tag), cache_dir=str(tmp_path))
    assert Path(chosen).name == weights.filename
    assert f"models--{weights.repo.replace('/', '--')}" in chosen


def test_sd_checker_needs_its_config_processor_and_checkpoint() -> None:
    files = weight_files("sd-checker")
    assert {f.repo for f in files} == {"CompVis/stable-diffusion-safety-checker"}
    assert [f.filename for f in files] == [
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    ]


def test_tiny_needs_no_download() -> None:
    assert weight_files("tiny") == []
    assert missing_weights("tiny", "/nonexistent") == []


def test_missing_weights_lists_local_paths(tmp_path: Path) -> None:
    expected = tmp_path / "hf/CompVis/stable-diffusion-safety-checker/pytorch_model.bin"
    assert expected in missing_weights("sd-checker", tmp_path)
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"x")
    assert expected not in missing_weights("sd-checker", tmp_path)
    assert len(missing_weights("sd-checker", tmp_path)) == 2


def test_unknown_key_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownEncoderError) as caught:
        get_entry("vit-l-14")
    message = str(caught.value)
    assert "'vit-l-14'" in message
    for key in ("vit-l-14-openai", "sd-checker", "tiny", "openclip:<model>:<tag>"):
        assert key in message


def test_generic_key_errors_name_what_exists() -> None:
    with pytest.raises(UnknownEncoderError, match="openclip:<model>:<tag>"):
        get_entry("openclip:ViT-B-32")
    with pytest.raises(UnknownEncoderError, match="laion2b_s34b_b79k"):
        get_entry("openclip:ViT-B-32:laion2b")
    with pytest.raises(UnknownEncoderError, match="ViT-L-14"):
        get_entry("openclip:ViT-X-99:openai")


def test_generic_entries_take_preprocessing_and_quick_gelu_from_the_table() -> None:
    from open_clip.constants import INCEPTION_MEAN

    inception = get_entry("openclip:ViT-L-14:laion2b_s32b_b82k")
    assert inception.preprocess.mean == tuple(INCEPTION_MEAN)
    assert inception.quick_gelu is False
    assert inception.weights[0].repo == "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"
    assert get_entry("openclip:ViT-B-32:openai").quick_gelu is True
    assert get_entry("openclip:ViT-B-32:openai").embed_dim == 512


def test_cache_key_is_a_folder_name_that_follows_the_identity() -> None:
    keys = {cache_key(k) for k in ("vit-l-14-openai", "sd-checker", "tiny")}
    keys.add(cache_key("openclip:ViT-B-32:laion2b_s34b_b79k"))
    assert len(keys) == 4
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{8}", key), key
    assert cache_key("vit-l-14-openai").startswith("vit-l-14-openai-")
    assert cache_key("tiny") == cache_key("tiny")
    assert cache_key("tiny", "float32") != cache_key("tiny", "auto")
    with pytest.raises(ValueError, match="precision 'fp16'"):
        cache_key("tiny", "fp16")


def test_identity_covers_model_weights_preprocessing_precision_and_format() -> None:
    ident = identity("vit-l-14-openai")
    assert ident["model"] == "ViT-L-14" and ident["pretrained"] == "openai"
    assert ident["quick_gelu"] is True
    assert ident["weights"] == [
        "timm/vit_large_patch14_clip_224.openai/open_clip_model.safetensors@main"
    ]
    assert {"resize", "crop", "interpolation", "mean", "std", "resize_mode"} <= set(
        ident["preprocess"]
    )
    assert ident["precision"] == "auto" and ident["format"] >= 1 and ident["output"] == "raw"
    entry = get_entry("vit-l-14-openai")
    other_crop = entry.model_copy(
        update={"preprocess": entry.preprocess.model_copy(update={"interpolation": "bilinear"})}
    )
    assert entry_identity(other_crop) != entry_identity(entry)


@pytest.mark.usefixtures("own_registry")
def test_user_entries_and_their_model_config_feed_the_key(tmp_path: Path) -> None:
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 16, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "ubsafe-test-user.json").write_text(json.dumps(config))
    registry = tmp_path / "registry"
    registry.mkdir()
    tiny = json.loads((REPO_ROOT / "ubsafe/encoders/registry/tiny.json").read_text())
    tiny.update(model="ubsafe-test-user", model_config="../ubsafe-test-user.json", embed_dim=16)
    (registry / "ubsafe-test-user-entry.json").write_text(json.dumps(tiny))
    add_registry_path(registry)
    assert "ubsafe-test-user-entry" in list_encoders()
    before = cache_key("ubsafe-test-user-entry")
    config["vision_cfg"]["layers"] = 2
    (tmp_path / "ubsafe-test-user.json").write_text(json.dumps(config, indent=2))
    assert cache_key("ubsafe-test-user-entry") != before


@pytest.mark.usefixtures("own_registry")
def test_invalid_entry_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken-entry.json"
    path.write_text(json.dumps({"family": "open_clip", "embed_dim": 8}))
    add_registry_path(path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        get_entry("broken-entry")


def test_import_is_light_and_missing_weights_stop_before_building(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "import ubsafe.encoders as encoders\n"
        "assert 'torch' not in sys.modules, 'torch imported by ubsafe.encoders'\n"
        "encoders.list_encoders(); encoders.cache_key('vit-l-14-openai')\n"
        "assert 'torch' not in sys.modules, 'torch imported by the registry'\n"
        "from ubsafe.weights import MissingWeightsError\n"
        "try:\n"
        "    encoders.load_encoder('vit-l-14-openai', sys.argv[1])\n"
        "except MissingWeightsError:\n"
        "    print('open_clip' in sys.modules, 'transformers' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
