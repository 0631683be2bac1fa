"""The attack space as tensors: the per-channel affine map to pixels, the box and the ε-ball."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ubsafe.attacks.spec import AttackSpec


@dataclass(frozen=True)
class AttackSpace:
    """pixel = offset + scale · a per channel; a stays in [lower, upper] and ‖a − a0‖∞ ≤ eps."""

    offset: torch.Tensor  # (1, C, 1, 1)
    scale: torch.Tensor  # (1, C, 1, 1)
    lower: float
    upper: float
    eps: float
    identity: bool

    @classmethod
    def of(cls, spec: AttackSpec, like: torch.Tensor) -> AttackSpace:
        """The space of `spec` with tensors on the device and dtype of `like` (B, C, H, W)."""
        if like.ndim != 4 or like.shape[1] != len(spec.scale):
            raise ValueError(
                f"images have shape {tuple(like.shape)}; the attack {spec.key} expects "
                f"(B, {len(spec.scale)}, H, W) pixels, already resized and cropped"
            )

        def channel_tensor(values: tuple[float, ...]) -> torch.Tensor:
            return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

        return cls(
            offset=channel_tensor(spec.offset),
            scale=channel_tensor(spec.scale),
            lower=spec.bounds[0],
            upper=spec.bounds[1],
            eps=spec.eps,
            identity=spec.is_pixel_space,
        )

    def to_attack(self, pixels: torch.Tensor) -> torch.Tensor:
        """Attack-space coordinates of pixels (exact when the space is the pixels)."""
        if self.identity:
            return pixels.clone()
        return (pixels - self.offset) / self.scale

    def to_pixels(self, a: torch.Tensor) -> torch.Tensor:
        """Pixels of attack-space coordinates; differentiable."""
        if self.identity:
            return a
        return self.offset + self.scale * a

    def project(self, a: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
        """The nearest point of the ε-ball around a0 intersected with the box (both L∞ boxes)."""
        inside_ball = a0 + torch.clamp(a - a0, min=-self.eps, max=self.eps)
        return torch.clamp(inside_ball, min=self.lower, max=self.upper)

    def clip_to_box(self, a: torch.Tensor) -> torch.Tensor:
        return torch.clamp(a, min=self.lower, max=self.upper)

    def check_inside(self, a0: torch.Tensor, *, tolerance: float = 1e-5) -> None:
        """Refuse clean images that lie outside the box (they would be moved before any attack)."""
        low, high = float(a0.min()), float(a0.max())
        if low < self.lower - tolerance or high > self.upper + tolerance:
            where = "pixels" if self.identity else "normalised inputs"
            raise ValueError(
                f"clean {where} span [{low:.4g}, {high:.4g}], outside the attack bounds "
                f"[{self.lower:g}, {self.upper:g}]; pass [0, 1] pixels (resized and cropped, "
                "not normalised) and the encoder's own mean/std"
            )
