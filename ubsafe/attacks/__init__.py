"""Gradient attacks (FGSM, PGD, L∞ DeepFool) end to end through an encoder and a surrogate head.

The caller composes `model`: [0, 1] pixels (B, 3, S, S), already resized and cropped → the
encoder (which normalises inside) → a differentiable head → (B, 2) outputs [safe, unsafe]; and
`judge`: pixels → the classifier's hard-rule decision. `run_attack` attacks in the spec's attack
space, differentiating whatever `model` returns, and judges the adversarial pixels by the hard rule.

Two modes (`spec.py`):
- ubsafe's default, `ubsafe_spec(name, eps_255)`: L∞ budget eps_255/255 on the pixels, clamped to
  [0, 1]; the head is the classifier's `surrogate()`, which returns logits.
- the paper's, `paper_spec(name, mean, std)`: UnsafeBench's foolbox 3 setting, eps 0.01 in the
  normalised input space with bounds (−3, 3); per channel that is eps·std_c in pixels and a box
  wider than [0, 1]. The head is the classifier's `paper_surrogate()`: what UnsafeBench's attacked
  model returned, and so what foolbox's losses saw — softmax(100·cos) for Q16, softmax([1 − p, p])
  of the unsafe probability p for MultiHeaded and the NSFW detector, softmax([−u, u]) of the
  largest concept score for the SD checker. FGSM and PGD follow the sign of the gradient, so any
  head with the same ranking of the two outputs gives the same steps; DeepFool's step lengths and
  early stop depend on the outputs themselves, which is why the paper's mode uses these heads. The
  encoder is ubsafe's, so its arithmetic (precision, batch-invariant passes) is not the reference's
  to the last bit.

DeepFool: foolbox's L∞ variant (overshoot on the total perturbation, early stop per sample once the
head's argmax leaves the label), then the result is projected onto the ε-ball in the attack space,
as foolbox's `clipped` output that UnsafeBench judged; `linf` is measured after it.

`spec` and `sampling` import no torch; the rest is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ubsafe.attacks.sampling import attack_seed, paper_draw
from ubsafe.attacks.spec import (
    ATTACK_NAMES,
    PAPER_SAMPLES_PER_SOURCE,
    PAPER_SEEDS,
    UBSAFE_EPS_255,
    AttackSpec,
    paper_spec,
    ubsafe_spec,
)

if TYPE_CHECKING:
    from ubsafe.attacks.runner import AttackResult, run_attack
    from ubsafe.attacks.start import uniform_start

__all__ = [
    "ATTACK_NAMES",
    "PAPER_SAMPLES_PER_SOURCE",
    "PAPER_SEEDS",
    "UBSAFE_EPS_255",
    "AttackResult",
    "AttackSpec",
    "attack_seed",
    "paper_draw",
    "paper_spec",
    "run_attack",
    "ubsafe_spec",
    "uniform_start",
]

_TORCH_NAMES = {
    "AttackResult": "ubsafe.attacks.runner",
    "run_attack": "ubsafe.attacks.runner",
    "uniform_start": "ubsafe.attacks.start",
}


def __getattr__(name: str) -> Any:
    # torch-backed names load lazily, so importing a spec stays cheap.
    if name in _TORCH_NAMES:
        import importlib

        return getattr(importlib.import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module 'ubsafe.attacks' has no attribute {name!r}")
