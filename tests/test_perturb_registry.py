"""The registry, the seed derivation, input validation and the frost textures."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ubsafe.perturb import (
    UnknownPerturbationError,
    _frost,
    get_perturbation,
    list_perturbations,
    perturbation_seed,
)

IMAGENET_C = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
]
EXTRA = ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
REPO = Path(__file__).resolve().parents[1]


def test_registry_lists_imagenet_c_then_extra_then_paper() -> None:
    infos = list_perturbations()
    assert [i.name for i in infos] == [*IMAGENET_C, *EXTRA, "paper_gaussian_noise"]
    assert [i.name for i in infos if i.suite == "imagenet-c"] == IMAGENET_C
    assert [i.name for i in infos if i.suite == "imagenet-c-extra"] == EXTRA
    for info in infos:
        assert info.description
        assert info.family in {"noise", "blur", "weather", "digital", "paper"}
        expected = (1,) if info.name == "paper_gaussian_noise" else (1, 2, 3, 4, 5)
        assert info.severities == expected
        assert info.batched or info.notes  # a non-batched entry says why
    assert {i.name for i in infos if not i.batched} == {"jpeg_compression", "spatter"}


def test_get_perturbation_loads_every_entry() -> None:
    for info in list_perturbations():
        perturbation = get_perturbation(info.name)
        assert perturbation.info == info
        assert perturbation.fingerprint().startswith(f"{info.name}:v")


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownPerturbationError) as error:
        get_perturbation("gausian_noise")
    message = str(error.value)
    assert "'gausian_noise'" in message
    for name in [*IMAGENET_C, *EXTRA]:
        assert name in message
    assert isinstance(error.value, ValueError)


def test_registry_import_does_not_load_torch() -> None:
    code = (
        "import sys; import ubsafe.perturb as p; p.list_perturbations(); "
        "p.perturbation_seed(0, 'x', 'fog', 1); print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_seed_is_blake2b_of_the_identity() -> None:
    text = "\x1f".join(["ubsafe-perturb-v1", "2023", "img-001", "fog", "3"])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    assert perturbation_seed(2023, "img-001", "fog", 3) == int.from_bytes(digest, "little") & (
        2**63 - 1
    )


def test_seed_is_stable_across_processes() -> None:
    code = "from ubsafe.perturb import perturbation_seed as s; print(s(7, 'café/1.png', 'snow', 5))"
    results = set()
    for hash_seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        results.add(int(out.stdout))
    assert results == {perturbation_seed(7, "café/1.png", "snow", 5)}


def test_seed_depends_on_every_field() -> None:
    base = perturbation_seed(0, "a", "fog", 1)
    variants = [
        perturbation_seed(1, "a", "fog", 1),
        perturbation_seed(0, "b", "fog", 1),
        perturbation_seed(0, "a", "frost", 1),
        perturbation_seed(0, "a", "fog", 2),
        perturbation_seed(0, "a1", "fog", 1),
    ]
    assert len({base, *variants}) == 6
    assert all(0 <= s < 2**63 for s in [base, *variants])


def good_batch(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (good_batch().double(), "float32"),
        ((good_batch() * 255).to(torch.uint8), "float32"),
        (good_batch()[:, :1], r"\(B, 3, S, S\)"),
        (good_batch()[..., :30], r"\(B, 3, S, S\)"),
        (good_batch(size=16), "minimum 32"),
        (good_batch() * 255, r"\[0,1\]"),
        (good_batch() - 0.5, r"\[0,1\]"),
        (torch.full((1, 3, 32, 32), float("nan")), r"\[0,1\]"),
    ],
)
def test_bad_images_are_refused_with_the_fix(images: torch.Tensor, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        get_perturbation("fog").apply(images, 1, list(range(images.shape[0])))


def test_bad_seeds_severity_and_normalization_are_refused() -> None:
    fog = get_perturbation("fog")
    with pytest.raises(ValueError, match="3 seeds for a batch of 2"):
        fog.apply(good_batch(), 1, [1, 2, 3])
    with pytest.raises(ValueError, match=r"seeds\[1\]"):
        fog.apply(good_batch(), 1, [1, -2])
    with pytest.raises(ValueError, match="severity 6 is not one of 1, 2, 3, 4, 5"):
        fog.apply(good_batch(), 6, [1, 2])
    paper = get_perturbation("paper_gaussian_noise")
    with pytest.raises(ValueError, match="severity 2 is not one of 1"):
        paper.apply(good_batch(), 2, [1, 2], normalization=((0.5,) * 3, (0.2,) * 3))
    with pytest.raises(ValueError, match="normalization"):
        paper.apply(good_batch(), 1, [1, 2])


def test_empty_batch_returns_empty() -> None:
    out = get_perturbation("snow").apply(torch.zeros(0, 3, 32, 32), 2, [])
    assert out.shape == (0, 3, 32, 32)


def test_procedural_frost_is_deterministic_and_plausible() -> None:
    first = _frost._procedural(2, 64)
    _frost.frost_textures.cache_clear()
    again = _frost.frost_textures(64, "").images[2]
    np.testing.assert_array_equal(first, again)
    textures = _frost.frost_textures(224, "").images
    assert len(textures) == 5
    for texture in textures:
        assert texture.shape[0] > 224 and texture.shape[1] > 224
        assert texture.dtype == np.float32 and texture.min() >= 0 and texture.max() <= 1
        assert 0.3 < texture.mean() < 0.85  # the photographs' range of brightness
        assert texture.std() > 0.05  # structure, not a flat tint
    assert not np.array_equal(textures[0], textures[1])


def test_frost_textures_from_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    for name in _frost.FROST_FILES:
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / name)
    procedural = get_perturbation("frost").fingerprint()
    monkeypatch.setenv(_frost.ENV_VAR, str(tmp_path))
    textures = _frost.frost_textures(32, str(tmp_path))
    with Image.open(tmp_path / "frost1.png") as image:
        np.testing.assert_allclose(textures.images[0], np.asarray(image) / 255.0, atol=1e-7)
    assert get_perturbation("frost").fingerprint() != procedural
    small = _frost.frost_textures(64, str(tmp_path)).images[0]  # too small: upscaled to fit
    assert small.shape[0] > 64 and small.shape[1] > 64
    out = get_perturbation("frost").apply(good_batch(), 3, [5, 6])
    assert out.shape == (2, 3, 32, 32)
    (tmp_path / "frost4.jpg").unlink()
    _frost.frost_source_id.cache_clear()
    with pytest.raises(FileNotFoundError, match=r"frost4\.jpg"):
        _frost.frost_source_id(str(tmp_path))
