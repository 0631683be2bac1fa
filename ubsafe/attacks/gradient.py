"""Sign-gradient attacks: FGSM (one step of eps from the clean image) and L∞ PGD."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ubsafe.attacks.space import AttackSpace

Model = Callable[[torch.Tensor], torch.Tensor]


def checked_logits(logits: torch.Tensor, batch: int) -> torch.Tensor:
    """The model output, refused unless it is (batch, classes ≥ 2) logits."""
    if logits.ndim != 2 or logits.shape[0] != batch or logits.shape[1] < 2:
        raise ValueError(
            f"the attacked model returned shape {tuple(logits.shape)} for {batch} images; it must "
            "return (B, classes) logits such as [safe, unsafe] (the surrogate head, not a score)"
        )
    # Loss arithmetic in at least float32, so a half-precision encoder still gets usable gradients.
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def loss_gradient(
    model: Model, space: AttackSpace, a: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """∇_a of the summed cross-entropy of the model's logits at pixels(a) against `labels`."""
    with torch.enable_grad():
        a = a.detach().requires_grad_(True)
        logits = checked_logits(model(space.to_pixels(a)), a.shape[0])
        loss = F.cross_entropy(logits, labels, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, a)
    return gradient


def sign_gradient_ascent(
    model: Model,
    space: AttackSpace,
    a0: torch.Tensor,
    labels: torch.Tensor,
    a_start: torch.Tensor,
    *,
    steps: int,
    step_size: float,
) -> torch.Tensor:
    """`steps` updates a ← Π(a + step_size · sign ∇loss), Π onto the ε-ball around a0 ∩ the box.

    FGSM is the one-step case from a0 with step_size = eps; PGD starts from `a_start`. No early
    stop: the surrogate flipping is not the hard rule flipping, so every sample runs all steps.
    """
    a = a_start.detach()
    for _ in range(steps):
        gradient = loss_gradient(model, space, a, labels)
        a = space.project(a + step_size * gradient.sign(), a0).detach()
    return a
