"""sd_filter against diffusers' `StableDiffusionSafetyChecker` on the same random weights.

A tiny random checker gets concept vectors and thresholds chosen so
that both outcomes, special-care hits and near-threshold scores occur; its state dict is written in
the released checkpoint's layout and loaded back through `load_classifier`. Decisions must be
identical on every image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from classifier_fixtures import hub_path, write_sd_checker_bin

from ubsafe.classifiers import EmbeddingClassifier, load_classifier
from ubsafe.classifiers.sd_filter import checker_rule

pytest.importorskip("diffusers")
from diffusers.pipelines.stable_diffusion.safety_checker import (
    StableDiffusionSafetyChecker,
)
from transformers import CLIPConfig

N_IMAGES = 400
PROJECTION = 16


def tiny_checker() -> StableDiffusionSafetyChecker:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=4,
        ),
        projection_dim=PROJECTION,
    )
    return StableDiffusionSafetyChecker(config).eval()


def unit_cosines(embeds: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    e = embeds / np.linalg.norm(embeds, axis=1, keepdims=True)
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return e @ v.T


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    checker = tiny_checker()
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(N_IMAGES, 3, 32, 32, generator=generator)
    with torch.no_grad():
        embeds = checker.visual_projection(checker.vision_model(pixels)[1])
    e = embeds.numpy().astype(np.float64)

    # Concepts near the images' mean direction, so that cosines spread around usable thresholds.
    rng = np.random.default_rng(2)
    centre = e.mean(axis=0)
    concepts = centre + rng.normal(0.0, 1.0, (17, PROJECTION)) * np.linalg.norm(centre) * 0.6
    specials = centre + rng.normal(0.0, 1.0, (3, PROJECTION)) * np.linalg.norm(centre) * 0.6
    cos_c, cos_s = unit_cosines(e, concepts), unit_cosines(e, specials)
    # Thresholds at high quantiles: each concept fires for a few percent of the images, so about
    # half are unsafe; the special-care concepts fire for about a third.
    concept_w = np.quantile(cos_c, rng.uniform(0.95, 0.995, 17), axis=0).diagonal()
    special_w = np.quantile(cos_s, [0.8, 0.85, 0.9], axis=0).diagonal()

    with torch.no_grad():
        checker.concept_embeds.copy_(torch.tensor(concepts, dtype=torch.float32))
        checker.special_care_embeds.copy_(torch.tensor(specials, dtype=torch.float32))
        checker.concept_embeds_weights.copy_(torch.tensor(concept_w, dtype=torch.float32))
        checker.special_care_embeds_weights.copy_(torch.tensor(special_w, dtype=torch.float32))

    weights_dir = tmp_path_factory.mktemp("weights")
    write_sd_checker_bin(weights_dir, checker.state_dict())

    logging.getLogger("diffusers").setLevel(logging.ERROR)  # its NSFW warning, expected here
    images = np.zeros((N_IMAGES, 2, 2, 3))
    _, has_nsfw = checker(clip_input=pixels, images=images)
    return {
        "checker": checker,
        "embeds": embeds.numpy(),
        "reference": np.asarray(has_nsfw, dtype=bool),
        "weights_dir": weights_dir,
    }


def float64_margins(checker: StableDiffusionSafetyChecker, embeds: np.ndarray) -> dict:
    """The rule's quantities, unrounded, in float64 (to locate the edges)."""
    e = embeds.astype(np.float64)
    cos_c = unit_cosines(e, checker.concept_embeds.numpy().astype(np.float64))
    cos_s = unit_cosines(e, checker.special_care_embeds.numpy().astype(np.float64))
    special = cos_s - checker.special_care_embeds_weights.numpy()
    hit = (special > 0.0005).any(axis=1)
    concept = cos_c - checker.concept_embeds_weights.numpy() + 0.01 * hit[:, None]
    return {"special": special, "hit": hit, "concept": concept, "max": concept.max(axis=1)}


def test_identical_decisions_to_diffusers(setup: dict) -> None:
    classifier = load_classifier("sd_filter", setup["weights_dir"])
    assert isinstance(classifier, EmbeddingClassifier)
    reference = setup["reference"]
    margins = float64_margins(setup["checker"], setup["embeds"])

    # The data exercise the rule: both outcomes, special-care hits that decide, near-edge scores.
    assert 0.25 < reference.mean() < 0.75
    assert 0.15 < margins["hit"].mean() < 0.6
    only_by_adjustment = (
        margins["hit"] & (margins["max"] > 0.0005) & (margins["max"] - 0.01 < 0.0005)
    )
    assert only_by_adjustment.sum() >= 3
    near_edge = np.abs(margins["max"] - 0.0005) < 0.002
    assert near_edge.sum() >= 10

    pred, score = classifier.decide(setup["embeds"])

    np.testing.assert_array_equal(pred.astype(bool), reference)
    np.testing.assert_allclose(score, margins["max"], atol=1e-6)


def test_safetensors_beside_the_bin_is_preferred_and_equivalent(
    setup: dict, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    checker = setup["checker"]
    write_sd_checker_bin(tmp_path, checker.state_dict())
    bin_path = hub_path(tmp_path, "CompVis/stable-diffusion-safety-checker", "pytorch_model.bin")
    # The .bin now holds different thresholds: if the safetensors file is read, decisions match.
    state = {k: v.contiguous() for k, v in checker.state_dict().items()}
    save_file(state, str(bin_path.with_name("model.safetensors")), metadata={"format": "pt"})
    wrong = dict(checker.state_dict())
    wrong["concept_embeds_weights"] = torch.full((17,), 2.0)
    torch.save(wrong, bin_path)

    classifier = load_classifier("sd_filter", tmp_path)
    assert isinstance(classifier, EmbeddingClassifier)
    pred, _ = classifier.decide(setup["embeds"])
    np.testing.assert_array_equal(pred.astype(bool), setup["reference"])


def diffusers_loop(
    cos_c: np.ndarray, cos_s: np.ndarray, wc: np.ndarray, ws: np.ndarray
) -> list[bool]:
    """diffusers' per-image loop, element by element: float32 cosines, Python-float thresholds."""
    result = []
    for i in range(cos_c.shape[0]):
        adjustment = 0.0
        for k in range(cos_s.shape[1]):
            if round(cos_s[i][k] - float(ws[k]) + adjustment, 3) > 0:
                adjustment = 0.01
        bad = [
            j
            for j in range(cos_c.shape[1])
            if round(cos_c[i][j] - float(wc[j]) + adjustment, 3) > 0
        ]
        result.append(len(bad) > 0)
    return result


def test_rounding_edges_match_the_reference_loop() -> None:
    # Cosines stepped one float32 ulp at a time across each edge: round(·, 3) > 0 at 0.0005
    # (half to even), and the same edge shifted by the special-care adjustment (−0.0095).
    wc = np.array([0.25, 0.5], dtype=np.float32)
    ws = np.array([0.3], dtype=np.float32)
    rows_c, rows_s = [], []
    for special_offset in (-0.01, 0.0005, 0.0015):
        for concept_offset in (0.0005, -0.0095, 0.0015, -0.0085, 0.0):
            base = np.float32(wc[1] + concept_offset)
            for step in range(-40, 41):
                value = base
                for _ in range(abs(step)):
                    value = np.nextafter(value, np.float32(np.sign(step) * 2))
                rows_c.append([np.float32(0.0), value])
                rows_s.append([np.float32(ws[0] + special_offset)])
    cos_c = np.array(rows_c, dtype=np.float32)
    cos_s = np.array(rows_s, dtype=np.float32)

    unsafe, _ = checker_rule(cos_c, cos_s, wc, ws)

    expected = diffusers_loop(cos_c, cos_s, wc, ws)
    assert 0.3 < np.mean(expected) < 0.9
    np.testing.assert_array_equal(unsafe, expected)


def test_surrogate_agrees_away_from_the_rounding_band(setup: dict) -> None:
    classifier = load_classifier("sd_filter", setup["weights_dir"])
    assert isinstance(classifier, EmbeddingClassifier)
    pred, _ = classifier.decide(setup["embeds"])
    margins = float64_margins(setup["checker"], setup["embeds"])
    away = (np.abs(margins["max"] - 0.0005) > 1e-5) & (
        np.abs(margins["special"] - 0.0005) > 1e-5
    ).all(axis=1)
    assert away.mean() > 0.9

    x = torch.from_numpy(setup["embeds"].copy()).requires_grad_(True)
    logits = classifier.surrogate()(x)
    np.testing.assert_array_equal(logits.argmax(dim=1).numpy()[away], pred[away])
    (logits[:, 1] - logits[:, 0]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.abs().sum(dim=1) > 0).all()


def test_checkpoint_without_concepts_is_refused(tmp_path: Path) -> None:
    path = hub_path(tmp_path, "CompVis/stable-diffusion-safety-checker", "pytorch_model.bin")
    torch.save({"visual_projection.weight": torch.zeros(16, 32)}, path)
    with pytest.raises(ValueError, match=r"lacks .*concept_embeds"):
        load_classifier("sd_filter", tmp_path)


def test_a_rows_result_does_not_depend_on_its_batch(setup: dict) -> None:
    classifier = load_classifier("sd_filter", setup["weights_dir"])
    assert isinstance(classifier, EmbeddingClassifier)
    pred, score = classifier.decide(setup["embeds"])
    for start, stop in ((0, 1), (3, 9), (50, 377)):
        p, s = classifier.decide(setup["embeds"][start:stop])
        assert p.tobytes() == pred[start:stop].tobytes()
        assert s.tobytes() == score[start:stop].tobytes()


def test_a_legacy_format_checkpoint_loads(setup: dict, tmp_path: Path) -> None:
    # Checkpoints written before torch's zip format cannot be memory-mapped; they still load.
    path = hub_path(tmp_path, "CompVis/stable-diffusion-safety-checker", "pytorch_model.bin")
    torch.save(setup["checker"].state_dict(), path, _use_new_zipfile_serialization=False)
    classifier = load_classifier("sd_filter", tmp_path)
    assert isinstance(classifier, EmbeddingClassifier)
    pred, _ = classifier.decide(setup["embeds"])
    np.testing.assert_array_equal(pred.astype(bool), setup["reference"])
