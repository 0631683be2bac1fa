"""open_clip encoders against open_clip itself: same weights, same images, same embeddings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import load_file, save_file
from test_encoders_support import (  # noqa: F401 (one_thread is a fixture)
    MID_CONFIG,
    one_thread,
    sample_images,
    tower_digest,
    write_open_clip_entry,
)

from ubsafe.encoders import get_entry, load_encoder
from ubsafe.encoders.deterministic import deterministic_state_dict
from ubsafe.weights import MissingWeightsError

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def open_clip_reference(name: str, checkpoint: Path, images: list, **kwargs: object) -> np.ndarray:
    """open_clip's own route: create_model_and_transforms(pretrained=<file>), preprocess, encode."""
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(checkpoint), **kwargs
    )
    model.eval()
    with torch.no_grad():
        batch = torch.stack([preprocess(image) for image in images])
        return model.encode_image(batch).numpy()


@pytest.fixture(scope="module")
def mid(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    return write_open_clip_entry(
        tmp_path_factory.mktemp("mid"), "ubsafe-test-mid", MID_CONFIG, quick_gelu=False
    )


def test_tiny_matches_open_clip_preprocess_and_encode_image(tmp_path: Path) -> None:
    encoder = load_encoder("tiny", tmp_path, device="cpu")
    # Materialise the same weights as an open_clip checkpoint and load it the way open_clip does.
    config = Path(get_entry("tiny").model_config_path or "")
    open_clip.add_model_config(config)
    skeleton = open_clip.create_model("ubsafe-tiny")
    checkpoint = tmp_path / "tiny.safetensors"
    save_file(deterministic_state_dict(skeleton.state_dict(), "tiny"), str(checkpoint))

    images = sample_images(9)
    ours = encoder.encode(encoder.to_inputs(images))
    reference = open_clip_reference("ubsafe-tiny", checkpoint, images)
    assert ours.dtype == np.float32 and ours.shape == (9, 64)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5)
    # Not a degenerate model: different images give clearly different embeddings.
    assert np.abs(ours[0] - ours[1]).max() > 1e-2


def test_mid_size_model_through_pretrained_path_matches_open_clip(
    mid: tuple[str, Path, Path],
) -> None:
    key, weights_dir, checkpoint = mid
    encoder = load_encoder(key, weights_dir, device="cpu")
    images = sample_images(12, seed=1)
    ours = encoder.encode(encoder.to_inputs(images))
    reference = open_clip_reference(key, checkpoint, images)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5)
    assert encoder.image_size == 112 and encoder.embed_dim == 128


def test_to_input_is_open_clip_transform_without_normalisation(mid: tuple[str, Path, Path]) -> None:
    key, weights_dir, checkpoint = mid
    encoder = load_encoder(key, weights_dir, device="cpu")
    _, _, preprocess = open_clip.create_model_and_transforms(key, pretrained=str(checkpoint))
    for image in sample_images(5, seed=2):
        pixels = encoder.to_input(image)
        assert pixels.dtype == torch.float32 and pixels.shape == (3, 112, 112)
        assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
        mean = torch.tensor(encoder.mean).view(3, 1, 1)
        std = torch.tensor(encoder.std).view(3, 1, 1)
        assert torch.equal((pixels - mean) / std, preprocess(image))


def test_quick_gelu_is_forced_when_the_named_config_lacks_it(tmp_path: Path) -> None:
    # The vit-l-14-openai route on a small config: a config without quick_gelu, an entry with it.
    small = {**MID_CONFIG, "vision_cfg": {**MID_CONFIG["vision_cfg"], "layers": 2}}
    key, weights_dir, checkpoint = write_open_clip_entry(
        tmp_path, "ubsafe-test-gelu-small", small, quick_gelu=True, seed=3
    )
    assert "quick_gelu" not in json.loads((tmp_path / "configs" / f"{key}.json").read_text())
    encoder = load_encoder(key, weights_dir, device="cpu")
    modules = list(encoder._tower.modules())
    assert any(isinstance(m, QuickGELU) for m in modules)
    assert not any(isinstance(m, torch.nn.GELU) for m in modules)

    # Independent reference: the CLIP class built directly with quick_gelu, weights loaded by hand.
    reference = open_clip.CLIP(**small, quick_gelu=True).eval()
    reference.load_state_dict(load_file(str(checkpoint)))
    images = sample_images(4, seed=4)
    pixels = encoder.to_inputs(images)
    mean = torch.tensor(encoder.mean).view(3, 1, 1)
    std = torch.tensor(encoder.std).view(3, 1, 1)
    with torch.no_grad():
        expected = reference.encode_image((pixels - mean) / std).numpy()
    ours = encoder.encode(pixels)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    # The pitfall is real: the same weights with nn.GELU give other embeddings.
    gelu = open_clip_reference(key, checkpoint, images)
    assert np.abs(gelu - ours).max() > 1e-3


@pytest.mark.slow
def test_vit_l_14_openai_entry_builds_quick_gelu_vit_l(tmp_path: Path) -> None:
    entry = get_entry("vit-l-14-openai")
    torch.manual_seed(5)
    reference, _, preprocess = open_clip.create_model_and_transforms("ViT-L-14-quickgelu")
    reference.eval()
    checkpoint = entry.weight_files()[0].local_path(tmp_path)
    checkpoint.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(checkpoint))
    del reference.transformer, reference.token_embedding  # the text tower is not needed below

    encoder = load_encoder("vit-l-14-openai", tmp_path, device="cpu")
    modules = list(encoder._tower.modules())
    assert sum(isinstance(m, QuickGELU) for m in modules) == 24
    assert not any(isinstance(m, torch.nn.GELU) for m in modules)
    assert (encoder.embed_dim, encoder.image_size) == (768, 224)

    images = sample_images(2, seed=6)
    ours = encoder.encode(encoder.to_inputs(images))
    with torch.no_grad():
        expected = reference.encode_image(torch.stack([preprocess(i) for i in images])).numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


DIGEST_SCRIPT = """
import sys, torch
torch.manual_seed(int(sys.argv[1]))
from ubsafe.encoders import load_encoder
from test_encoders_support import tower_digest
print(tower_digest(load_encoder("tiny", ".", device="cpu")))
"""


def test_tiny_weights_are_identical_in_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}"}
    other = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT, "1234"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    torch.manual_seed(99)  # another global seed here: it must not matter
    assert other.stdout.strip() == tower_digest(load_encoder("tiny", tmp_path, device="cpu"))


def test_missing_checkpoint_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as caught:
        load_encoder("vit-l-14-openai", tmp_path, device="cpu")
    message = str(caught.value)
    expected = tmp_path / "hf/timm/vit_large_patch14_clip_224.openai/open_clip_model.safetensors"
    assert str(expected) in message
    assert "ubsafe weights fetch" in message
    assert "huggingface.co/timm/vit_large_patch14_clip_224.openai" in message


def test_declared_preprocessing_must_match_the_model(
    tmp_path: Path, mid: tuple[str, Path, Path]
) -> None:
    key, weights_dir, _ = mid
    entry = get_entry(key)
    wrong = entry.model_copy(
        update={"preprocess": entry.preprocess.model_copy(update={"crop": 96, "resize": 96})}
    )
    with pytest.raises(ValueError, match=r"crop: entry 96, model 112"):
        load_encoder(wrong, weights_dir, device="cpu")
