"""FGSM, PGD and DeepFool against independent implementations on the same tiny models.

torchattacks (pixel space, [0, 1]) and foolbox 3 (UnsafeBench's library: the normalised space with
bounds (−3, 3)) are test-only dependencies; each comparison uses identical settings and, for PGD,
the very random start the reference draws from the global torch RNG.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from ubsafe.attacks import paper_spec, run_attack, ubsafe_spec

torchattacks = pytest.importorskip("torchattacks")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TOLERANCE = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Normalise(nn.Module):
    """The encoder's input normalisation, inside the model as ubsafe's wrappers do it."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


class CosineHead(nn.Module):
    """Q16-style head: 100 · cosine to two prompt vectors, as [safe, unsafe] logits."""

    def __init__(self, prompts: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prompts", prompts / prompts.norm(dim=1, keepdim=True))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return 100.0 * (embedding / embedding.norm(dim=1, keepdim=True)) @ self.prompts.T


class Encode(nn.Module):
    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(normalised)


def tiny_cnn_core() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.GELU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 2),
    ).eval()


@pytest.fixture(scope="module")
def tiny_clip_core(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    """A tiny open_clip ViT from an open_clip JSON config, with a cosine head on its embedding."""
    open_clip = pytest.importorskip("open_clip")
    config_dir: Path = tmp_path_factory.mktemp("open_clip_config")
    config = {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 16,
            "layers": 2,
            "width": 32,
            "head_width": 16,
            "patch_size": 4,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    (config_dir / "ubsafe-attack-ref-tiny.json").write_text(json.dumps(config))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(1)
    clip = open_clip.create_model("ubsafe-attack-ref-tiny", pretrained=None)
    return nn.Sequential(Encode(clip), CosineHead(torch.randn(2, 16))).eval()


@pytest.fixture(params=["cnn", "clip"])
def core(request: pytest.FixtureRequest) -> nn.Module:
    """The model on normalised inputs (what foolbox attacked in UnsafeBench)."""
    if request.param == "cnn":
        return tiny_cnn_core()
    return request.getfixturevalue("tiny_clip_core")


def pixel_model(core: nn.Module) -> nn.Module:
    return nn.Sequential(Normalise(CLIP_MEAN, CLIP_STD), core).eval()


def images_and_labels(model: nn.Module, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    pixels = torch.rand(n, 3, 16, 16, generator=generator)
    with torch.no_grad():
        labels = model(pixels).argmax(dim=1)
    return pixels, labels


def argmax_judge(model: nn.Module):  # type: ignore[no-untyped-def]
    return lambda pixels: model(pixels).argmax(dim=1)


def channel(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values).view(1, -1, 1, 1)


@pytest.mark.parametrize("eps_255", [1, 2, 4, 8])
def test_fgsm_equals_torchattacks(core: nn.Module, eps_255: int) -> None:
    model = pixel_model(core)
    pixels, labels = images_and_labels(model)
    ours = run_attack(
        model,
        pixels,
        labels,
        ubsafe_spec("fgsm", eps_255),
        seeds=range(len(pixels)),
        judge=argmax_judge(model),
    )
    reference = torchattacks.FGSM(model, eps=eps_255 / 255)(pixels, labels)
    torch.testing.assert_close(ours.adversarial, reference, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("eps_255", [2, 8])
def test_pgd_equals_torchattacks_from_the_same_start(core: nn.Module, eps_255: int) -> None:
    model = pixel_model(core)
    pixels, labels = images_and_labels(model)
    spec = ubsafe_spec("pgd", eps_255, steps=20)
    # torchattacks draws its start from the global RNG: draw it the same way and hand it over.
    torch.manual_seed(11)
    start = torch.clamp(pixels + torch.empty_like(pixels).uniform_(-spec.eps, spec.eps), 0, 1)
    torch.manual_seed(11)
    reference = torchattacks.PGD(
        model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps, random_start=True
    )(pixels, labels)
    ours = run_attack(
        model,
        pixels,
        labels,
        spec,
        seeds=range(len(pixels)),
        judge=argmax_judge(model),
        start=start,
    )
    torch.testing.assert_close(ours.adversarial, reference, atol=TOLERANCE, rtol=0)
    assert not torch.equal(reference, pixels)


def test_pgd_without_random_start_equals_torchattacks(core: nn.Module) -> None:
    model = pixel_model(core)
    pixels, labels = images_and_labels(model)
    spec = ubsafe_spec("pgd", 4, steps=15, random_start=False)
    reference = torchattacks.PGD(
        model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps, random_start=False
    )(pixels, labels)
    ours = run_attack(model, pixels, labels, spec, seeds=[0] * 8, judge=argmax_judge(model))
    torch.testing.assert_close(ours.adversarial, reference, atol=TOLERANCE, rtol=0)


def _foolbox_attack(name: str):  # type: ignore[no-untyped-def]
    foolbox = pytest.importorskip("foolbox")
    attacks = foolbox.attacks
    return {  # the calls of UnsafeBench's assess_robustness.py
        "fgsm": lambda: attacks.LinfFastGradientAttack(),
        "pgd": lambda: attacks.LinfProjectedGradientDescentAttack(steps=100),
        "deepfool": lambda: attacks.LinfDeepFoolAttack(steps=100, candidates=2),
    }[name]()


@pytest.mark.parametrize("name", ["fgsm", "pgd", "deepfool"])
def test_paper_mode_equals_foolbox_in_the_normalised_space(core: nn.Module, name: str) -> None:
    foolbox = pytest.importorskip("foolbox")
    model = pixel_model(core)
    pixels, labels = images_and_labels(model)
    normalised = (pixels - channel(CLIP_MEAN)) / channel(CLIP_STD)
    # eps 0.05 rather than the paper's 0.01 so that some images flip on a random tiny model.
    spec = paper_spec(name, CLIP_MEAN, CLIP_STD, eps=0.05)
    fmodel = foolbox.PyTorchModel(core, bounds=(-3, 3), preprocessing=None)

    torch.manual_seed(5)
    _, clipped, reference_success = _foolbox_attack(name)(fmodel, normalised, labels, epsilons=0.05)
    start = None
    if name == "pgd":  # foolbox's start: x0 + torch.rand·2eps − eps, clipped to the bounds
        torch.manual_seed(5)
        noise = torch.rand(normalised.shape) * (2 * spec.eps) - spec.eps
        start = channel(CLIP_MEAN) + channel(CLIP_STD) * torch.clamp(normalised + noise, -3, 3)
    ours = run_attack(
        model,
        pixels,
        labels,
        spec,
        seeds=range(len(pixels)),
        judge=argmax_judge(model),
        start=start,
    )

    ours_normalised = (ours.adversarial - channel(CLIP_MEAN)) / channel(CLIP_STD)
    if name == "pgd":
        # 100 sign steps taken in two spaces (foolbox's normalised input, ours in pixels with
        # the normalisation inside the model): a gradient component that is zero up to rounding
        # may take its sign either way on another CPU's kernels. Such ties move a value by a
        # few steps at most, and only a handful of values.
        assert_equal_up_to_sign_ties(ours_normalised, clipped, step=spec.step_size)
    else:
        torch.testing.assert_close(ours_normalised, clipped, atol=TOLERANCE, rtol=0)
    assert torch.equal(ours.success, reference_success)


def assert_equal_up_to_sign_ties(ours: torch.Tensor, reference: torch.Tensor, step: float) -> None:
    """Equal within TOLERANCE except at most 1 value in 1,000, each within 4 steps."""
    apart = (ours - reference).abs()
    off = apart > TOLERANCE
    assert int(off.sum()) <= max(1, ours.numel() // 1000), f"{int(off.sum())} values differ"
    assert float(apart.max()) <= 4 * step + TOLERANCE, f"largest difference {float(apart.max())}"


@pytest.mark.parametrize("eps_255", [2, 255])
def test_deepfool_equals_foolbox_in_pixel_space(core: nn.Module, eps_255: int) -> None:
    foolbox = pytest.importorskip("foolbox")
    model = pixel_model(core)
    pixels, labels = images_and_labels(model)
    spec = ubsafe_spec("deepfool", eps_255, steps=50)
    attack = foolbox.attacks.LinfDeepFoolAttack(steps=50, candidates=2)
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), preprocessing=None)
    _, clipped, reference_success = attack(fmodel, pixels, labels, epsilons=spec.eps)
    ours = run_attack(model, pixels, labels, spec, seeds=range(8), judge=argmax_judge(model))
    torch.testing.assert_close(ours.adversarial, clipped, atol=TOLERANCE, rtol=0)
    assert torch.equal(ours.success, reference_success)
    if eps_255 == 255:  # an unlimited budget: DeepFool flips every image
        assert bool(ours.success.all())
