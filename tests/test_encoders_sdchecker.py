"""The sd-checker encoder against diffusers' StableDiffusionSafetyChecker on the same files.

The test writes a scaled-down checker (width 32, 2 layers, the real 224-pixel input and 768-d
projection) in the real repository's layout: a CLIPConfig `config.json` as the checker's (legacy
keys included), its `preprocessor_config.json` verbatim, and `pytorch_model.bin` with the keys
`vision_model.vision_model.*` that transformers 4 wrote.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from test_encoders_support import (  # noqa: F401 (one_thread is a fixture)
    OPENAI_MEAN,
    OPENAI_STD,
    one_thread,
    sample_images,
)
from test_images import grey_sources
from transformers import CLIPConfig, CLIPImageProcessorPil

from ubsafe.data.images import decode_image
from ubsafe.encoders import get_entry, load_encoder
from ubsafe.weights import MissingWeightsError

pytestmark = pytest.mark.usefixtures("one_thread")

# As in CompVis/stable-diffusion-safety-checker's preprocessor_config.json.
PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": OPENAI_MEAN,
    "image_std": OPENAI_STD,
    "resample": 3,
    "size": 224,
}

SMALL_VISION = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "patch_size": 14,
}


def legacy_config(vision: dict[str, Any]) -> dict[str, Any]:
    """A CLIPConfig file shaped like the checker's: full sub-config dumps plus `*_config_dict`."""
    legacy = {
        "add_cross_attention": False,
        "architectures": None,
        "bad_words_ids": None,
        "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        "torch_dtype": None,
        "transformers_version": None,
        "use_bfloat16": False,
        "pruned_heads": {},
    }
    text = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": 99,
        "model_type": "clip_text_model",
    }
    return {
        "_name_or_path": "clip_sd_checker",
        "architectures": ["StableDiffusionSafetyChecker"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": 768,
        "text_config": {**legacy, **text},
        "text_config_dict": text,
        "torch_dtype": "float32",
        "transformers_version": None,
        "vision_config": {
            **legacy,
            **vision,
            "hidden_act": "quick_gelu",
            "image_size": 224,
            "layer_norm_eps": 1e-5,
            "model_type": "clip_vision_model",
        },
        "vision_config_dict": vision,
    }


def write_checker(weights_dir: Path, seed: int = 0) -> Path:
    """Save a random scaled-down checker where the sd-checker entry expects its files."""
    entry = get_entry("sd-checker")
    folder = entry.weight_file("config.json").local_path(weights_dir).parent
    folder.mkdir(parents=True, exist_ok=True)
    config = legacy_config(SMALL_VISION)
    torch.manual_seed(seed)
    checker = StableDiffusionSafetyChecker(CLIPConfig(**config)).eval()
    state = {}
    for name, tensor in checker.state_dict().items():
        # transformers 4's CLIPVisionModel wrapped a `vision_model`: the published key layout.
        if name.startswith("vision_model."):
            name = "vision_model.vision_model." + name.removeprefix("vision_model.")
        state[name] = tensor
    state["vision_model.vision_model.embeddings.position_ids"] = torch.arange(257)[None]
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return folder


@pytest.fixture(scope="module")
def checker_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    weights_dir = tmp_path_factory.mktemp("weights")
    return weights_dir, write_checker(weights_dir)


def test_tower_equals_diffusers_safety_checker_internals(checker_dir: tuple[Path, Path]) -> None:
    weights_dir, folder = checker_dir
    encoder = load_encoder("sd-checker", weights_dir, device="cpu")
    assert (encoder.embed_dim, encoder.image_size) == (768, 224)

    # diffusers reads the same files on its own, and computes the checker's image embedding.
    checker = StableDiffusionSafetyChecker.from_pretrained(folder).eval()
    processor = CLIPImageProcessorPil.from_pretrained(folder)
    images = sample_images(6, seed=10)
    clip_input = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = checker.visual_projection(checker.vision_model(clip_input)[1]).numpy()

    ours = encoder.encode(encoder.to_inputs(images))
    assert ours.dtype == np.float32 and ours.shape == (6, 768)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    assert np.abs(ours[0] - ours[1]).max() > 1e-3


def test_to_input_is_the_image_processor_without_normalisation(
    checker_dir: tuple[Path, Path],
) -> None:
    weights_dir, folder = checker_dir
    encoder = load_encoder("sd-checker", weights_dir, device="cpu")
    processor = CLIPImageProcessorPil.from_pretrained(folder)
    mean = torch.tensor(OPENAI_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(3, 1, 1)
    for image in sample_images(4, seed=11):
        pixels = encoder.to_input(image)
        assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.float32
        assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
        expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close((pixels - mean) / std, expected, rtol=0, atol=1e-6)
    # decode worker processes receive the converter pickled, without the model
    travelled = pickle.loads(pickle.dumps(encoder.input_converter))
    image = sample_images(1, seed=12)[0]
    assert torch.equal(travelled(image), encoder.to_input(image))


def test_missing_checkpoint_is_named_before_loading(tmp_path: Path) -> None:
    folder = write_checker(tmp_path)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(MissingWeightsError) as caught:
        load_encoder("sd-checker", tmp_path, device="cpu")
    message = str(caught.value)
    assert str(folder / "pytorch_model.bin") in message
    assert "config.json" not in message  # only what is missing
    assert "ubsafe weights fetch" in message


def test_checkpoint_that_does_not_fit_the_config_is_refused(tmp_path: Path) -> None:
    folder = write_checker(tmp_path)
    config = legacy_config({**SMALL_VISION, "num_hidden_layers": 3})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match the config"):
        load_encoder("sd-checker", tmp_path, device="cpu")


def test_a_checkpoint_without_the_projection_is_refused(tmp_path: Path) -> None:
    folder = write_checker(tmp_path)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["visual_projection.weight"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="not a StableDiffusionSafetyChecker checkpoint"):
        load_encoder("sd-checker", tmp_path, device="cpu")


def test_other_preprocessing_than_declared_is_refused(tmp_path: Path) -> None:
    folder = write_checker(tmp_path)
    (folder / "preprocessor_config.json").write_text(json.dumps({**PREPROCESSOR, "resample": 2}))
    with pytest.raises(ValueError, match="interpolation: entry 'bicubic', processor 'bilinear'"):
        load_encoder("sd-checker", tmp_path, device="cpu")


def test_greyscale_input_equals_its_rgb_copy(checker_dir: tuple[Path, Path]) -> None:
    weights_dir, _ = checker_dir
    encoder = load_encoder("sd-checker", weights_dir, device="cpu")
    for name, data in grey_sources().items():
        grey = decode_image(data, grey=True)
        assert grey.mode == "L"
        assert torch.equal(encoder.to_input(grey), encoder.to_input(decode_image(data))), name
