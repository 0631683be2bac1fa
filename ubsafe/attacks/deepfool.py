"""L∞ DeepFool, the variant of foolbox 3 (`LinfDeepFoolAttack`) that UnsafeBench used.

Per step, for each candidate class k among the clean top `candidates` (k ≠ the top one), the
margin m_k = z_k − z_top and its gradient g_k give the linearised L∞ distance |m_k| / ‖g_k‖₁; the
nearest k's step (distance + 1e-4) · sign(g_k) is added to the total perturbation p, and the point
becomes clip_box(a0 + (1 + overshoot) · p): the overshoot scales the *total* perturbation, not each
step. A sample stops once the surrogate's argmax differs from its label (checked before each step,
so the last step's result is returned unchecked, as in foolbox). DeepFool minimises the
perturbation and knows no budget: the caller projects the result onto the ε-ball afterwards.
"""

from __future__ import annotations

import torch

from ubsafe.attacks.gradient import Model, checked_logits
from ubsafe.attacks.space import AttackSpace

#: foolbox adds these to the L1 norm (division) and to the step length (numerical stability).
_NORM_FLOOR = 1e-8
_STEP_PAD = 1e-4


def deepfool_linf(
    model: Model,
    space: AttackSpace,
    a0: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    candidates: int,
    overshoot: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unprojected DeepFool point for every sample, and how many steps each one took."""
    batch = a0.shape[0]
    with torch.no_grad():
        clean_logits = checked_logits(model(space.to_pixels(a0)), batch)
    n_candidates = min(candidates, clean_logits.shape[1])
    # Candidates are ranked by the clean logits (foolbox's argsort-then-flip order).
    classes = clean_logits.argsort(dim=1).flip(1)[:, :n_candidates]

    a = a0.clone()
    p_total = torch.zeros_like(a0)
    steps_taken = torch.zeros(batch, dtype=torch.long, device=a0.device)
    active = torch.arange(batch, device=a0.device)
    for _ in range(steps):
        margins, gradients, logits = _candidate_margins(model, space, a[active], classes[active])
        not_yet = logits.argmax(dim=1) == labels[active]
        active, margins, gradients = active[not_yet], margins[not_yet], gradients[not_yet]
        if active.numel() == 0:
            break
        l1 = gradients.flatten(start_dim=2).abs().sum(dim=2)
        distances = margins.abs() / (l1 + _NORM_FLOOR)
        nearest = distances.argmin(dim=1)
        rows = torch.arange(active.numel(), device=a0.device)
        length = (distances[rows, nearest] + _STEP_PAD).view(-1, *([1] * (a0.ndim - 1)))
        p_total[active] += length * gradients[rows, nearest].sign()
        a[active] = space.clip_to_box(a0[active] + (1.0 + overshoot) * p_total[active])
        steps_taken[active] += 1
    return a, steps_taken


def _candidate_margins(
    model: Model, space: AttackSpace, a: torch.Tensor, classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Margins z_k − z_top (n, K−1), their gradients (n, K−1, ...) and the logits (n, classes)."""
    with torch.enable_grad():
        a = a.detach().requires_grad_(True)
        logits = checked_logits(model(space.to_pixels(a)), a.shape[0])
        top = logits.gather(1, classes[:, :1]).squeeze(1)
        margins, gradients = [], []
        last = classes.shape[1] - 1
        for k in range(1, classes.shape[1]):
            margin = logits.gather(1, classes[:, k : k + 1]).squeeze(1) - top
            (gradient,) = torch.autograd.grad(margin.sum(), a, retain_graph=k < last)
            margins.append(margin.detach())
            gradients.append(gradient)
    return torch.stack(margins, dim=1), torch.stack(gradients, dim=1), logits.detach()
