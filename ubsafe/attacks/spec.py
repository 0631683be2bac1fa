"""What an attack does, as a frozen value: the algorithm, its budget and the space it works in.

The attack space is an affine, per-channel view of the pixels:

    pixel_c = offset_c + scale_c · a_c,        a ∈ [lower, upper],        ‖a − a0‖∞ ≤ eps

ubsafe's default mode attacks the pixels themselves (offset 0, scale 1, box [0, 1], eps = k/255).
The paper's mode reproduces UnsafeBench's foolbox setting, which attacked the classifier's
*normalised* input: offset = mean, scale = std, box (−3, 3), eps = 0.01. In pixels that is a
per-channel budget eps·std_c (about 0.7/255 for CLIP) and a box [mean_c − 3·std_c,
mean_c + 3·std_c], which is wider than [0, 1]: the paper's adversarial pixels may leave [0, 1]
by up to eps·std_c.

This module imports no torch, so configs and the command line can build specs cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

AttackName = Literal["fgsm", "pgd", "deepfool"]
AttackMode = Literal["ubsafe", "paper"]

ATTACK_NAMES: tuple[str, ...] = ("fgsm", "pgd", "deepfool")

#: ubsafe's default pixel-space L∞ budgets, in 1/255 units.
UBSAFE_EPS_255: tuple[int, ...] = (1, 2, 4, 8)
#: UnsafeBench: eps in the classifier's normalised input space, for every attack.
PAPER_EPS = 0.01
#: UnsafeBench: foolbox bounds of the normalised input of the CLIP-based classifiers.
PAPER_BOUNDS: tuple[float, float] = (-3.0, 3.0)
#: UnsafeBench: seeds of the draw of attacked images, and how many clean-correct images per source.
PAPER_SEEDS: tuple[int, ...] = (2023, 2024, 2025)
PAPER_SAMPLES_PER_SOURCE = 500

#: foolbox 3's LinfProjectedGradientDescentAttack default step, relative to eps.
FOOLBOX_PGD_REL_STEPSIZE = 0.01 / 0.3
#: foolbox 3's DeepFool default overshoot.
FOOLBOX_DEEPFOOL_OVERSHOOT = 0.02

_DEFAULT_STEPS: dict[str, int] = {"fgsm": 1, "pgd": 10, "deepfool": 50}
_PAPER_STEPS: dict[str, int] = {"fgsm": 1, "pgd": 100, "deepfool": 100}


@dataclass(frozen=True)
class AttackSpec:
    """An untargeted L∞ attack: algorithm, budget, iteration settings and the attack space.

    All lengths (`eps`, `step_size`) are in attack-space units; `pixel_eps` gives the per-channel
    budget in pixels. `offset` and `scale` have one entry per image channel. `step_size` and
    `random_start` concern FGSM/PGD, `overshoot` and `candidates` DeepFool.
    """

    name: AttackName
    eps: float
    steps: int
    step_size: float
    random_start: bool
    overshoot: float
    candidates: int
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    bounds: tuple[float, float]
    mode: AttackMode

    def __post_init__(self) -> None:
        if self.name not in ATTACK_NAMES:
            raise ValueError(f"attack name {self.name!r} is not one of {', '.join(ATTACK_NAMES)}")
        _require(math.isfinite(self.eps) and self.eps > 0, f"eps {self.eps!r} must be > 0")
        _require(self.steps >= 1, f"{self.name}: steps {self.steps!r} must be at least 1")
        if self.name == "fgsm":
            _require(
                self.steps == 1 and not self.random_start,
                f"fgsm is one step from the clean image (steps=1, no random start), "
                f"got steps={self.steps}, random_start={self.random_start}; use 'pgd' instead",
            )
        _require(
            math.isfinite(self.step_size) and self.step_size > 0,
            f"{self.name}: step_size {self.step_size!r} must be > 0",
        )
        _require(self.overshoot >= 0, f"overshoot {self.overshoot!r} must be ≥ 0")
        _require(self.candidates >= 2, f"candidates {self.candidates!r} must be at least 2")
        _require(
            len(self.offset) == len(self.scale) and len(self.scale) > 0,
            f"offset {self.offset!r} and scale {self.scale!r} need one value per channel each",
        )
        _require(
            all(math.isfinite(s) and s > 0 for s in self.scale),
            f"scale {self.scale!r} must be positive (the normalisation's std)",
        )
        lower, upper = self.bounds
        _require(lower < upper, f"bounds {self.bounds!r} must be (lower, upper) with lower < upper")
        _require(self.mode in ("ubsafe", "paper"), f"mode {self.mode!r} is not ubsafe or paper")

    @property
    def pixel_eps(self) -> tuple[float, ...]:
        """The budget in pixel units, per channel: eps · scale_c."""
        return tuple(self.eps * s for s in self.scale)

    @property
    def pixel_bounds(self) -> tuple[tuple[float, float], ...]:
        """The box in pixel units, per channel: offset_c + scale_c · bounds."""
        lower, upper = self.bounds
        return tuple(
            (o + s * lower, o + s * upper) for o, s in zip(self.offset, self.scale, strict=True)
        )

    @property
    def is_pixel_space(self) -> bool:
        """True when the attack space is the pixels themselves (offset 0, scale 1)."""
        return all(o == 0.0 for o in self.offset) and all(s == 1.0 for s in self.scale)

    @property
    def key(self) -> str:
        """A short stable name for files and tables, e.g. `pgd-eps4` or `deepfool-paper`."""
        if self.mode == "paper":
            return f"{self.name}-paper"
        return f"{self.name}-eps{self.eps * 255:g}"

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for run records and HDF5 attributes)."""
        return asdict(self)


def ubsafe_spec(
    name: str,
    eps_255: float,
    *,
    steps: int | None = None,
    rel_stepsize: float | None = None,
    random_start: bool = True,
    overshoot: float = FOOLBOX_DEEPFOOL_OVERSHOOT,
    candidates: int = 2,
    channels: int = 3,
) -> AttackSpec:
    """ubsafe's default: an L∞ budget of `eps_255`/255 in [0, 1] pixel space, clamped to [0, 1].

    Defaults: FGSM one step of eps; PGD 10 steps of 2.5·eps/steps (Madry et al.'s rule) from a
    uniform random start; DeepFool (L∞, foolbox 3 variant) up to 50 steps, overshoot 0.02 on the
    total perturbation, then projected to the budget.
    """
    name = _known_name(name)
    _require(
        math.isfinite(eps_255) and eps_255 > 0,
        f"eps_255 {eps_255!r} must be > 0 (budget in 1/255 pixel units, e.g. 1, 2, 4, 8)",
    )
    eps = eps_255 / 255.0
    n_steps = _DEFAULT_STEPS[name] if steps is None else steps
    _require(n_steps >= 1, f"{name}: steps {n_steps!r} must be at least 1")
    if name == "pgd":
        rel = 2.5 / n_steps if rel_stepsize is None else rel_stepsize
    else:
        rel = 1.0 if rel_stepsize is None else rel_stepsize
    return AttackSpec(
        name=name,
        eps=eps,
        steps=n_steps,
        step_size=rel * eps,
        random_start=random_start and name == "pgd",
        overshoot=overshoot,
        candidates=candidates,
        offset=(0.0,) * channels,
        scale=(1.0,) * channels,
        bounds=(0.0, 1.0),
        mode="ubsafe",
    )


def paper_spec(
    name: str,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    eps: float = PAPER_EPS,
    bounds: tuple[float, float] = PAPER_BOUNDS,
) -> AttackSpec:
    """UnsafeBench's foolbox 3 setting, in the classifier's normalised input space.

    `mean` and `std` are the encoder's normalisation (the model still takes pixels; the attack
    maps a = (pixel − mean)/std). FGSM: one step of eps. PGD: 100 steps of eps·0.01/0.3 from a
    uniform random start. DeepFool: 100 steps, 2 candidates, overshoot 0.02, result clipped to
    ±eps. For NudeNet the paper used mean 0, std 1 and bounds (−1, 1) on [0, 1] pixels.
    """
    name = _known_name(name)
    _require(
        len(mean) == len(std),
        f"mean {tuple(mean)!r} and std {tuple(std)!r} need one value per channel each",
    )
    return AttackSpec(
        name=name,
        eps=float(eps),
        steps=_PAPER_STEPS[name],
        step_size=float(eps) * (FOOLBOX_PGD_REL_STEPSIZE if name == "pgd" else 1.0),
        random_start=name == "pgd",
        overshoot=FOOLBOX_DEEPFOOL_OVERSHOOT,
        candidates=2,
        offset=tuple(float(m) for m in mean),
        scale=tuple(float(s) for s in std),
        bounds=(float(bounds[0]), float(bounds[1])),
        mode="paper",
    )


def _known_name(name: str) -> AttackName:
    key = name.strip().lower()
    if key not in ATTACK_NAMES:
        raise ValueError(f"attack {name!r} is not one of {', '.join(ATTACK_NAMES)}")
    return key  # type: ignore[return-value]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
