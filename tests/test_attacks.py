"""Attack specs and the behaviour of every attack: budgets, bounds, flips, seeds, batches."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from ubsafe.attacks import (
    AttackSpec,
    attack_seed,
    paper_draw,
    paper_spec,
    run_attack,
    ubsafe_spec,
    uniform_start,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ATTACKS = ("fgsm", "pgd", "deepfool")
SLACK = 1e-6  # float round-off allowed on top of a budget


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- tiny models --------------------------------------------------------------------------------


class Normalise(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


def tiny_cnn(*, dropout: float = 0.0) -> nn.Module:
    """Pixels → normalisation → a small CNN → 2 logits."""
    torch.manual_seed(0)
    return nn.Sequential(
        Normalise(CLIP_MEAN, CLIP_STD),
        nn.Conv2d(3, 6, 3, padding=1),
        nn.GELU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(24, 2),
    ).eval()


def argmax_judge(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda pixels: model(pixels).argmax(dim=1)


def clean_batch(model: nn.Module, n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = model(pixels).argmax(dim=1)
    return pixels, labels


def spec_for(mode: str, name: str) -> AttackSpec:
    if mode == "ubsafe":
        return ubsafe_spec(name, 8)
    return paper_spec(name, CLIP_MEAN, CLIP_STD, eps=0.05)


def channel(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values).view(1, -1, 1, 1)


# --- specs --------------------------------------------------------------------------------------


def test_ubsafe_spec_is_a_pixel_budget_in_255ths() -> None:
    pgd = ubsafe_spec("pgd", 4)
    assert pgd.eps == pytest.approx(4 / 255)
    assert pgd.pixel_eps == pytest.approx((4 / 255,) * 3)
    assert pgd.pixel_bounds == ((0.0, 1.0),) * 3
    assert pgd.random_start and pgd.steps == 10
    assert pgd.step_size == pytest.approx(2.5 * (4 / 255) / 10)
    assert ubsafe_spec("pgd", 4, steps=40).step_size == pytest.approx(2.5 * (4 / 255) / 40)
    fgsm = ubsafe_spec("FGSM", 2)
    assert (fgsm.name, fgsm.steps, fgsm.random_start) == ("fgsm", 1, False)
    assert fgsm.step_size == pytest.approx(2 / 255)
    assert [ubsafe_spec(n, 1).key for n in ATTACKS] == ["fgsm-eps1", "pgd-eps1", "deepfool-eps1"]


def test_paper_spec_maps_the_normalised_budget_to_pixels_per_channel() -> None:
    spec = paper_spec("pgd", CLIP_MEAN, CLIP_STD)
    # a = (pixel − mean)/std, so |Δa| ≤ 0.01 ⇔ |Δpixel_c| ≤ 0.01·std_c, and a ∈ (−3, 3) ⇔
    # pixel_c ∈ (mean_c − 3 std_c, mean_c + 3 std_c), wider than [0, 1].
    assert spec.pixel_eps == pytest.approx(tuple(0.01 * s for s in CLIP_STD))
    expected_box = [(m - 3 * s, m + 3 * s) for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)]
    assert np.allclose(spec.pixel_bounds, expected_box)
    assert max(s * 255 * 0.01 for s in CLIP_STD) < 0.71  # "about 0.7/255"
    assert (spec.steps, spec.random_start) == (100, True)
    assert spec.step_size == pytest.approx(0.01 * 0.01 / 0.3)  # foolbox's rel_stepsize
    deepfool = paper_spec("deepfool", CLIP_MEAN, CLIP_STD)
    assert (deepfool.steps, deepfool.candidates, deepfool.overshoot) == (100, 2, 0.02)
    assert paper_spec("fgsm", CLIP_MEAN, CLIP_STD).step_size == pytest.approx(0.01)
    nudenet = paper_spec("fgsm", (0, 0, 0), (1, 1, 1), bounds=(-1, 1))
    assert nudenet.is_pixel_space and nudenet.pixel_eps == pytest.approx((0.01,) * 3)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ubsafe_spec("cw", 4), "not one of fgsm, pgd, deepfool"),
        (lambda: ubsafe_spec("pgd", 0), "eps_255 0"),
        (lambda: ubsafe_spec("pgd", 4, steps=0), "steps 0"),
        (lambda: ubsafe_spec("fgsm", 4, steps=5), "use 'pgd'"),
        (lambda: ubsafe_spec("deepfool", 4, candidates=1), "candidates 1"),
        (lambda: paper_spec("pgd", CLIP_MEAN, CLIP_STD[:2]), "one value per channel"),
        (lambda: paper_spec("pgd", CLIP_MEAN, (0.2, 0.0, 0.2)), "must be positive"),
        (lambda: paper_spec("pgd", CLIP_MEAN, CLIP_STD, bounds=(3, -3)), "lower < upper"),
    ],
)
def test_specs_refuse_bad_settings_and_say_which(
    build: Callable[[], AttackSpec], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("n", "k", "seed"), [(1200, 500, 2023), (1200, 500, 2024), (37, 500, 2025)]
)
def test_paper_draw_is_unsafebench_random_sample(n: int, k: int, seed: int) -> None:
    state = random.getstate()
    try:
        random.seed(seed)  # UnsafeBench's random_draw_testing_adv_samples
        expected = random.sample(range(n), min(n, k))
    finally:
        random.setstate(state)
    assert paper_draw(n, seed=seed, k=k) == expected
    assert len(set(expected)) == min(n, k)


def test_attack_seeds_come_from_identities_and_survive_a_new_process() -> None:
    seeds = {attack_seed(2023, f"img-{i}", "pgd-eps4") for i in range(500)}
    assert len(seeds) == 500 and all(0 <= s < 2**63 for s in seeds)
    assert attack_seed(2023, "img-1", "pgd-eps4") != attack_seed(2024, "img-1", "pgd-eps4")
    assert attack_seed(2023, "img-1", "pgd-eps4") != attack_seed(2023, "img-1", "pgd-eps8")
    code = "from ubsafe.attacks import attack_seed; print(attack_seed(2023, 'img-1', 'pgd-eps4'))"
    root = Path(__file__).resolve().parents[1]
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(root)},
    )
    assert int(other.stdout) == attack_seed(2023, "img-1", "pgd-eps4")


def test_importing_attack_specs_does_not_import_torch() -> None:
    code = "import sys, ubsafe.attacks as a; a.ubsafe_spec('pgd', 4); print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"


# --- budgets and bounds -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("mode", ["ubsafe", "paper"])
def test_every_attack_stays_within_its_budget_and_bounds(mode: str, name: str) -> None:
    model = tiny_cnn()
    pixels, labels = clean_batch(model)
    spec = spec_for(mode, name)
    result = run_attack(model, pixels, labels, spec, seeds=range(8), judge=argmax_judge(model))

    delta = result.adversarial - pixels
    if mode == "ubsafe":
        assert float(delta.abs().max()) <= spec.eps + SLACK
        assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0
        attack_space_delta = delta
    else:
        std, mean = channel(CLIP_STD), channel(CLIP_MEAN)
        per_channel = delta.abs().amax(dim=(0, 2, 3))
        assert torch.all(per_channel <= torch.tensor(CLIP_STD) * spec.eps + SLACK)
        assert torch.all(result.adversarial >= mean - 3 * std - SLACK)
        assert torch.all(result.adversarial <= mean + 3 * std + SLACK)
        attack_space_delta = delta / std
    measured = attack_space_delta.abs().flatten(1).amax(1)
    torch.testing.assert_close(result.linf, measured, atol=SLACK, rtol=0)
    assert float(result.linf.max()) <= spec.eps + SLACK
    # the attack moves the images: FGSM and PGD spend the whole budget on some pixel
    if name != "deepfool":
        torch.testing.assert_close(result.linf, torch.full((8,), spec.eps), atol=SLACK, rtol=0)
    assert bool(result.success.any())


def test_paper_mode_may_leave_the_unit_cube_as_foolbox_did() -> None:
    """Bounds (−3, 3) in the normalised space do not keep pixels in [0, 1]."""
    model = tiny_cnn()
    pixels, labels = clean_batch(model)
    pixels[:, :, :4, :4] = 0.0  # a black corner: FGSM pushes some of it below zero
    result = run_attack(
        model,
        pixels,
        labels,
        paper_spec("fgsm", CLIP_MEAN, CLIP_STD),
        seeds=range(8),
        judge=argmax_judge(model),
    )
    assert float(result.adversarial.min()) < 0.0
    assert float(result.adversarial.min()) >= -0.01 * max(CLIP_STD) - SLACK


# --- the hard rule ------------------------------------------------------------------------------


class ConceptHead(nn.Module):
    """SD-safety-checker-style surrogate: u = max_j (cos_j − thr_j), logits [−u, u]."""

    def __init__(self, concepts: torch.Tensor, thresholds: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("concepts", concepts / concepts.norm(dim=1, keepdim=True))
        self.register_buffer("thresholds", thresholds)

    def cosines(self, embedding: torch.Tensor) -> torch.Tensor:
        return (embedding / embedding.norm(dim=1, keepdim=True)) @ self.concepts.T

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        u = (self.cosines(embedding) - self.thresholds).amax(dim=1)
        return torch.stack([-u, u], dim=1)


def rounded_rule(head: ConceptHead, embedding: torch.Tensor) -> torch.Tensor:
    """The hard rule, written independently: unsafe iff some score rounded to 3 decimals is > 0."""
    scores = np.round((head.cosines(embedding) - head.thresholds).numpy(), 3)
    return torch.from_numpy((scores > 0).any(axis=1).astype(np.int64))


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    """A tiny open_clip model built by open_clip from a JSON config, as the real loader does."""
    open_clip = pytest.importorskip("open_clip")
    config_dir = tmp_path_factory.mktemp("open_clip_config")
    config = {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 32,
            "head_width": 16,
            "patch_size": 8,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    (config_dir / "ubsafe-attack-tiny.json").write_text(json.dumps(config))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(2)
    return open_clip.create_model("ubsafe-attack-tiny", pretrained=None).eval()


@pytest.mark.parametrize("name", ATTACKS)
def test_a_successful_attack_flips_the_hard_rule_through_the_encoder(
    tiny_open_clip: nn.Module, name: str
) -> None:
    clip = tiny_open_clip
    mean, std = clip.visual.preprocess_cfg["mean"], clip.visual.preprocess_cfg["std"]
    normalise = Normalise(mean, std)

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        return clip.encode_image(normalise(pixels))

    pixels = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        embeddings = encode(pixels)
    concepts = torch.randn(5, 16, generator=torch.Generator().manual_seed(5))
    probe = ConceptHead(concepts, torch.zeros(5))
    # thresholds at the median cosine: about half the images are "unsafe" for some concept
    head = ConceptHead(concepts, probe.cosines(embeddings).median(dim=0).values)

    class Surrogate(nn.Module):
        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return head(encode(pixels))

    def judge(pixels: torch.Tensor) -> torch.Tensor:
        return rounded_rule(head, encode(pixels))

    labels = rounded_rule(head, embeddings)  # the clean-correct images, as the paper selects
    assert 0 < int(labels.sum()) < len(labels)
    spec = ubsafe_spec(name, 8)
    result = run_attack(Surrogate(), pixels, labels, spec, seeds=range(12), judge=judge)

    with torch.no_grad():
        adversarial_decision = rounded_rule(head, encode(result.adversarial))
    flipped = adversarial_decision != labels
    assert torch.equal(result.success, flipped)
    assert torch.equal(result.pred, adversarial_decision)
    assert bool(flipped.any())
    assert float((result.adversarial - pixels).abs().max()) <= spec.eps + SLACK
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0


# --- seeds and batches --------------------------------------------------------------------------


def test_random_start_is_uniform_in_the_ball_and_drawn_per_seed() -> None:
    eps = 4 / 255
    batch = uniform_start((3, 3, 32, 32), eps, [7, 8, 9])
    alone = uniform_start((1, 3, 32, 32), eps, [8])
    torch.testing.assert_close(batch[1:2], alone, atol=0, rtol=0)
    assert not torch.equal(batch[0], batch[2])
    assert float(batch.abs().max()) <= eps
    uniform = stats.uniform(loc=-eps, scale=2 * eps)
    assert stats.kstest(batch.flatten().numpy(), uniform.cdf).pvalue > 1e-3
    # independent coordinates: neighbouring values are uncorrelated
    values = batch.flatten().numpy()
    assert abs(np.corrcoef(values[:-1], values[1:])[0, 1]) < 0.05


@pytest.mark.parametrize("mode", ["ubsafe", "paper"])
@pytest.mark.parametrize("name", ATTACKS)
def test_results_do_not_depend_on_batch_composition(mode: str, name: str) -> None:
    model = tiny_cnn()
    pixels, labels = clean_batch(model, n=6)
    seeds = [101, 102, 103, 104, 105, 106]
    spec = spec_for(mode, name)
    whole = run_attack(model, pixels, labels, spec, seeds=seeds, judge=argmax_judge(model))
    order = [4, 1, 5]
    part = run_attack(
        model,
        pixels[order],
        labels[order],
        spec,
        seeds=[seeds[i] for i in order],
        judge=argmax_judge(model),
    )
    torch.testing.assert_close(part.adversarial, whole.adversarial[order], atol=1e-6, rtol=0)
    assert torch.equal(part.success, whole.success[order])
    assert torch.equal(part.steps_taken, whole.steps_taken[order])


class OneRowEncoder:
    """Like ubsafe's encoder on a CPU: one sample per pass, so its rows never see each other."""

    def __init__(self) -> None:
        torch.manual_seed(1)
        self.net = nn.Sequential(
            Normalise(CLIP_MEAN, CLIP_STD), nn.Flatten(), nn.Linear(3 * 16 * 16, 512)
        ).eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(row) for row in pixels.split(1)])


def test_the_stage_model_gives_bitwise_the_same_logits_and_gradients_for_any_shard() -> None:
    # A batched product's rows change in their last bits with the number of rows (the BLAS picks
    # kernels by shape); the attack stage's model must not let that reach an attack's sign steps.
    from ubsafe.classifiers.torch_head import BinaryLogits
    from ubsafe.stages.attack import end_to_end

    class ProbeHead(nn.Module):  # a probe's surrogate: w · e/|e| + b, as [-z, z] logits
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.linear = nn.Linear(512, 1)

        def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
            return self.linear(nn.functional.normalize(embeddings, dim=-1))

    model = end_to_end(OneRowEncoder(), BinaryLogits(ProbeHead()).eval())
    pixels = torch.rand(110, 3, 16, 16, generator=torch.Generator().manual_seed(3))

    with torch.no_grad():
        labels = model(pixels).argmax(dim=1)

    def logits_and_gradient(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        batch = pixels[rows].clone().requires_grad_(True)
        logits = model(batch)
        loss = nn.functional.cross_entropy(logits, labels[rows], reduction="sum")
        (gradient,) = torch.autograd.grad(loss, batch)
        return logits.detach(), gradient

    whole = logits_and_gradient(slice(0, 110))
    parts = [logits_and_gradient(slice(a, b)) for a, b in ((0, 7), (7, 110))]
    assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
    assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])

    spec = ubsafe_spec("pgd", 8, steps=10)
    judge = argmax_judge(model)  # type: ignore[arg-type]
    full = run_attack(model, pixels, labels, spec, seeds=range(110), judge=judge)
    split = [
        run_attack(model, pixels[a:b], labels[a:b], spec, seeds=range(a, b), judge=judge)
        for a, b in ((0, 7), (7, 110))
    ]
    assert torch.equal(torch.cat([r.adversarial for r in split]), full.adversarial)


def test_pgd_start_follows_each_samples_seed_alone() -> None:
    model = tiny_cnn()
    pixels, labels = clean_batch(model, n=4)
    spec = ubsafe_spec("pgd", 8, steps=3)
    first = run_attack(model, pixels, labels, spec, seeds=[1, 2, 3, 4], judge=argmax_judge(model))
    again = run_attack(model, pixels, labels, spec, seeds=[1, 2, 3, 4], judge=argmax_judge(model))
    other = run_attack(model, pixels, labels, spec, seeds=[1, 2, 99, 4], judge=argmax_judge(model))
    assert torch.equal(first.adversarial, again.adversarial)
    keep = [0, 1, 3]
    assert torch.equal(first.adversarial[keep], other.adversarial[keep])
    assert not torch.equal(first.adversarial[2], other.adversarial[2])


# --- DeepFool -----------------------------------------------------------------------------------


class Linear2(nn.Module):
    """logits = W · flatten(x) + b, for which the L∞ distance to the boundary is known exactly."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.flatten(1) @ self.weight.T + self.bias


def test_deepfool_finds_the_minimal_linf_flip_of_a_linear_model() -> None:
    generator = torch.Generator().manual_seed(6)
    weight = torch.randn(2, 3 * 4 * 4, generator=generator, dtype=torch.float64)
    model = Linear2(weight, torch.zeros(2, dtype=torch.float64))
    pixels = 0.45 + 0.1 * torch.rand(6, 3, 4, 4, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        logits = model(pixels)
    labels = logits.argmax(dim=1)
    # Hölder: the nearest flip in L∞ is |margin| / ‖w_1 − w_0‖₁ away, along sign(w_other − w_label).
    distance = (logits[:, 0] - logits[:, 1]).abs() / (weight[0] - weight[1]).abs().sum()
    assert float(distance.max()) < 0.4  # the box [0, 1] stays inactive

    spec = ubsafe_spec("deepfool", 255)  # budget 1: unconstrained here
    result = run_attack(model, pixels, labels, spec, seeds=range(6), judge=argmax_judge(model))
    assert bool(result.success.all())
    assert result.steps_taken.tolist() == [1] * 6  # exact on a linear model
    # foolbox's step: (distance + 1e-4), then the 2 % overshoot on the total perturbation
    torch.testing.assert_close(result.linf, 1.02 * (distance + 1e-4), rtol=1e-9, atol=1e-12)

    short = ubsafe_spec("deepfool", float(distance.min()) * 255 * 0.99)
    clipped = run_attack(model, pixels, labels, short, seeds=range(6), judge=argmax_judge(model))
    assert not bool(clipped.success.any())  # below the minimal distance nothing flips
    torch.testing.assert_close(clipped.linf, torch.full((6,), short.eps, dtype=torch.float64))


def test_deepfool_leaves_an_already_misclassified_image_alone() -> None:
    model = tiny_cnn()
    pixels, labels = clean_batch(model, n=4)
    labels[0] = 1 - labels[0]
    result = run_attack(
        model, pixels, labels, ubsafe_spec("deepfool", 8), seeds=range(4), judge=argmax_judge(model)
    )
    assert int(result.steps_taken[0]) == 0
    assert torch.equal(result.adversarial[0], pixels[0])
    assert bool(result.success[0])


# --- the contract -------------------------------------------------------------------------------


def test_the_model_runs_in_eval_mode_and_keeps_its_flags() -> None:
    model = tiny_cnn(dropout=0.5).train()
    model[1].eval()  # a mixed state must come back as it was
    pixels, labels = clean_batch(tiny_cnn(), n=4)
    spec = ubsafe_spec("pgd", 4, steps=3)
    runs = [
        run_attack(model, pixels, labels, spec, seeds=range(4), judge=lambda p: labels)
        for _ in range(2)
    ]
    assert torch.equal(runs[0].adversarial, runs[1].adversarial)  # no dropout during the attack
    assert model.training and not model[1].training and model[5].training


def test_bad_inputs_are_refused_with_the_fix() -> None:
    model = tiny_cnn()
    pixels, labels = clean_batch(model, n=2)
    judge = argmax_judge(model)
    spec = ubsafe_spec("pgd", 4)
    with pytest.raises(ValueError, match="outside the attack bounds"):
        run_attack(model, pixels * 255, labels, spec, seeds=[0, 1], judge=judge)
    with pytest.raises(ValueError, match="one seed per image"):
        run_attack(model, pixels, labels, spec, seeds=[0], judge=judge)
    with pytest.raises(ValueError, match=r"\(B, classes\) logits"):
        run_attack(lambda p: model(p)[:, 1], pixels, labels, spec, seeds=[0, 1], judge=judge)
    with pytest.raises(ValueError, match="one class index per image"):
        run_attack(model, pixels, labels, spec, seeds=[0, 1], judge=lambda p: torch.zeros(3))
    with pytest.raises(ValueError, match="outside the budget"):
        run_attack(model, pixels, labels, spec, seeds=[0, 1], judge=judge, start=pixels + 0.1)
    with pytest.raises(ValueError, match="takes none"):
        run_attack(
            model, pixels, labels, ubsafe_spec("fgsm", 4), seeds=[0, 1], judge=judge, start=pixels
        )


@pytest.mark.parametrize("name", ATTACKS)
def test_an_empty_batch_gives_an_empty_result(name: str) -> None:
    model = tiny_cnn()
    empty = torch.zeros(0, 3, 16, 16)
    result = run_attack(
        model,
        empty,
        torch.zeros(0, dtype=torch.long),
        ubsafe_spec(name, 4),
        seeds=[],
        judge=argmax_judge(model),
    )
    assert result.adversarial.shape == (0, 3, 16, 16)
    assert result.success.shape == result.linf.shape == result.steps_taken.shape == (0,)
