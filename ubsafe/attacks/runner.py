"""Run one attack on a batch and judge it by the classifier's hard rule."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ubsafe.attacks.deepfool import deepfool_linf
from ubsafe.attacks.gradient import Model, sign_gradient_ascent
from ubsafe.attacks.space import AttackSpace
from ubsafe.attacks.spec import AttackSpec
from ubsafe.attacks.start import uniform_start

Judge = Callable[[torch.Tensor], Any]

#: Slack for float round-off when checking a supplied start against the budget.
_START_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AttackResult:
    """Per-sample outcome of `run_attack`; every tensor has the batch as its first dimension."""

    adversarial: torch.Tensor  # (B, C, H, W) pixels, detached
    pred: torch.Tensor  # (B,) the hard rule's decision on `adversarial`
    success: torch.Tensor  # (B,) bool: pred != label
    linf: torch.Tensor  # (B,) L∞ of the perturbation, in the attack space (≤ eps)
    steps_taken: torch.Tensor  # (B,) int64 gradient steps applied


def run_attack(
    model: Model,
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: AttackSpec,
    *,
    seeds: Sequence[int],
    judge: Judge,
    start: torch.Tensor | None = None,
) -> AttackResult:
    """Attack `images` (B, C, H, W pixels, resized and cropped) untargeted against `labels`.

    `model` maps pixels to (B, classes) logits, normalising inside (e.g. encoder + surrogate head);
    gradients are those of its logits. `judge` maps pixels to the hard-rule decision (B,); a sample
    succeeds when that decision on its adversarial image differs from its label. `seeds[i]` alone
    drives sample i's random draws (PGD's start), so results do not depend on the batch. `start`
    (PGD only) replaces the random start with given pixels inside the budget, e.g. to reproduce
    another implementation's draw.

    Every adversarial image lies in the spec's box and within eps of the clean image in the attack
    space (DeepFool's result is projected onto that ball, as foolbox's `clipped` output). The model
    runs in eval mode throughout and its train/eval flags are restored afterwards.
    """
    _check_batch(images, labels, seeds)
    labels = labels.to(device=images.device, dtype=torch.long)
    space = AttackSpace.of(spec, images)
    if start is not None and spec.name != "pgd":
        raise ValueError(f"start is a PGD setting; the attack {spec.key} takes none")
    if images.shape[0] == 0:
        return _empty_result(images)
    a0 = space.to_attack(images.detach())
    space.check_inside(a0)

    with _eval_mode(model):
        if spec.name == "deepfool":
            a_raw, steps_taken = deepfool_linf(
                model,
                space,
                a0,
                labels,
                steps=spec.steps,
                candidates=spec.candidates,
                overshoot=spec.overshoot,
            )
            a_adv = space.project(a_raw, a0)
        else:
            a_start = _start_point(space, spec, a0, seeds, start)
            a_adv = sign_gradient_ascent(
                model, space, a0, labels, a_start, steps=spec.steps, step_size=spec.step_size
            )
            steps_taken = torch.full_like(labels, spec.steps)
        adversarial = space.to_pixels(a_adv).detach()
        pred = _judged(judge, adversarial, labels)

    return AttackResult(
        adversarial=adversarial,
        pred=pred,
        success=pred != labels,
        linf=(a_adv - a0).abs().flatten(start_dim=1).amax(dim=1),
        steps_taken=steps_taken,
    )


def _empty_result(images: torch.Tensor) -> AttackResult:
    no_rows = torch.zeros(0, dtype=torch.long, device=images.device)
    return AttackResult(
        adversarial=images.detach().clone(),
        pred=no_rows,
        success=no_rows.bool(),
        linf=images.new_zeros(0),
        steps_taken=no_rows,
    )


def _start_point(
    space: AttackSpace,
    spec: AttackSpec,
    a0: torch.Tensor,
    seeds: Sequence[int],
    start: torch.Tensor | None,
) -> torch.Tensor:
    """Where the sign-gradient steps begin: a0, a supplied start, or a seeded uniform draw."""
    if start is not None:
        if start.shape != a0.shape:
            raise ValueError(
                f"start has shape {tuple(start.shape)}; it must match the images {tuple(a0.shape)}"
            )
        a_start = space.to_attack(start.detach().to(device=a0.device, dtype=a0.dtype))
        excess = float((a_start - a0).abs().max()) - spec.eps
        if excess > _START_TOLERANCE or _outside_box(space, a_start):
            raise ValueError(
                f"start lies outside the budget of {spec.key} (eps {spec.eps:g} in the attack "
                f"space, exceeded by {max(excess, 0.0):.3g}) or outside its bounds {spec.bounds}"
            )
        return a_start
    if not spec.random_start:
        return a0
    noise = uniform_start(a0.shape, spec.eps, seeds, dtype=a0.dtype, device=a0.device)
    return space.clip_to_box(a0 + noise)


def _outside_box(space: AttackSpace, a: torch.Tensor) -> bool:
    low, high = float(a.min()), float(a.max())
    return low < space.lower - _START_TOLERANCE or high > space.upper + _START_TOLERANCE


def _judged(judge: Judge, adversarial: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        decision = judge(adversarial)
    pred = torch.as_tensor(decision, device=labels.device)
    if pred.shape != labels.shape:
        raise ValueError(
            f"the judge returned shape {tuple(pred.shape)} for {labels.shape[0]} images; it must "
            "return the hard rule's decision, one class index per image"
        )
    return pred.to(torch.long)


def _check_batch(images: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int]) -> None:
    if not torch.is_floating_point(images) or images.ndim != 4:
        raise ValueError(
            f"images must be a float (B, C, H, W) tensor of pixels, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    batch = images.shape[0]
    if labels.shape != (batch,):
        raise ValueError(
            f"labels have shape {tuple(labels.shape)}; pass one label per image ({batch},)"
        )
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for {batch} images; pass one seed per image")


@contextmanager
def _eval_mode(model: Model) -> Iterator[None]:
    """Eval mode (no dropout, frozen batch-norm statistics) for the attack, then the old flags."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
