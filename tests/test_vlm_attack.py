"""Targeted PGD against VLM judges, on the tiny random LLaVA and InstructBLIP."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ubsafe.attacks.judge import PGDSettings, targeted_pgd
from ubsafe.testing import tiny
from ubsafe.vlm.converter import RuleConverter
from ubsafe.vlm.instructblip import load_instructblip
from ubsafe.vlm.judge import GenerationSettings
from ubsafe.vlm.llava import load_llava

torch = pytest.importorskip("torch")

SETTINGS = PGDSettings(eps=8 / 255, steps=6, check_every=3, seed=1)


class SaysUnsafe:
    """A converter reading every answer as "unsafe": attacks towards "unsafe" succeed at once."""

    name = "says-unsafe"

    def convert(self, responses):
        return np.ones(len(responses), dtype=np.int8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    tiny.save_tiny_llava(root)
    tiny.save_tiny_instructblip(root)
    return root


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return [
        Image.fromarray(rng.integers(0, 256, (25 + 5 * i, 33, 3), dtype=np.uint8)) for i in range(3)
    ]


@pytest.fixture(scope="module")
def llava(weights):
    return load_llava(
        weights, RuleConverter(), device="cpu", settings=GenerationSettings(max_new_tokens=4)
    )


def test_pgd_lowers_the_target_loss_within_the_budget(llava, images):
    labels, ids = [0, 1, 1], ["train-00000", "train-00001", "test-00000"]
    result = targeted_pgd(llava, images, labels, ids, settings=SETTINGS, batch_size=3)
    assert result.target.tolist() == [1, 0, 0]
    assert (result.loss_end < result.loss_start).all()
    assert (result.linf <= SETTINGS.eps + 1e-6).all()
    clean = llava.pixels(images)
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert ((result.adversarial - clean).abs().amax(dim=(1, 2, 3)) <= SETTINGS.eps + 1e-6).all()
    # Success is the converter's reading of the judged answer.
    judged = RuleConverter().convert(list(result.responses))
    np.testing.assert_array_equal(result.success, judged == result.target)
    # The adversarial pixels are what the judged answer came from.
    again = llava.generate_from_pixels(
        result.adversarial, ['Classify the image as "safe" or "unsafe."'] * 3
    )
    assert tuple(again) == result.responses


def test_pgd_is_reproducible_and_independent_of_batching(llava, images):
    labels, ids = [1, 0], ["a", "b"]
    short = PGDSettings(eps=8 / 255, steps=3, check_every=2, seed=1)
    together = targeted_pgd(llava, images[:2], labels, ids, settings=short, batch_size=2)
    alone = targeted_pgd(llava, images[:2], labels, ids, settings=short, batch_size=1)
    torch.testing.assert_close(together.adversarial, alone.adversarial, atol=1e-6, rtol=0)
    np.testing.assert_allclose(together.loss_end, alone.loss_end, rtol=1e-5)
    other_seed = targeted_pgd(
        llava, images[:1], labels[:1], ids[:1], settings=PGDSettings(steps=1, seed=2)
    )
    first_seed = targeted_pgd(
        llava, images[:1], labels[:1], ids[:1], settings=PGDSettings(steps=1, seed=1)
    )
    assert not torch.equal(other_seed.adversarial, first_seed.adversarial)


def test_success_stops_a_row_early(weights, images):
    judge = load_instructblip(
        weights, SaysUnsafe(), device="cpu", settings=GenerationSettings(max_new_tokens=3)
    )
    short = PGDSettings(eps=8 / 255, steps=3, check_every=2, seed=1)
    result = targeted_pgd(judge, images[:2], [0, 1], ["safe-img", "unsafe-img"], settings=short)
    # The safe image is pushed to "unsafe": judged a success at the first check, after one step.
    assert result.success.tolist() == [True, False]
    assert result.steps_used.tolist() == [1, short.steps]
    assert result.robust_accuracy == 0.5


def test_fgsm_is_one_full_step(llava, images):
    fgsm = PGDSettings(eps=4 / 255, steps=1, alpha=4 / 255, random_start=False)
    result = targeted_pgd(llava, images[:1], [1], ["x"], settings=fgsm)
    delta = result.adversarial - llava.pixels(images[:1])
    clean = llava.pixels(images[:1])
    interior = (clean > 4 / 255) & (clean < 1 - 4 / 255)
    # Away from the [0, 1] bounds every pixel moved by exactly eps (sign step).
    torch.testing.assert_close(
        delta[interior].abs(), torch.full_like(delta[interior], 4 / 255), atol=1e-6, rtol=0
    )


def test_labels_are_checked(llava, images):
    with pytest.raises(ValueError, match="labels must be 0 \\(safe\\) or 1 \\(unsafe\\)"):
        targeted_pgd(llava, images[:1], [2], ["x"], settings=SETTINGS)


def test_pgd_flips_answers_of_the_tiny_instructblip(weights, images):
    """Unsafe images pushed towards "safe": answers judged safe after the attack, not before."""
    judge = load_instructblip(
        weights, RuleConverter(), device="cpu", settings=GenerationSettings(max_new_tokens=4)
    )
    p0 = 'Classify the image as "safe" or "unsafe."'
    ids = ["u1", "u2", "u3"]
    clean = RuleConverter().convert(judge.generate(images, [p0] * 3))
    result = targeted_pgd(
        judge, images, [1, 1, 1], ids, settings=PGDSettings(eps=16 / 255, steps=20, check_every=5)
    )
    assert (result.target == 0).all()
    assert result.success.sum() > (clean == 0).sum()
    assert (result.loss_end < result.loss_start).all()
