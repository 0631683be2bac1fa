"""The `Perturbation` interface: validate, draw per sample, render as batched tensor ops.

A perturbation is split in two so that tests can feed the same random draws to a reference:
`sample` draws each sample's randomness from its own CPU generator seeded with `seeds[i]`
(draws never depend on the device, the batch or a neighbour), and `render` is a deterministic
function of the images and those draws.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from ubsafe.perturb.registry import PerturbationInfo

#: Random draws of a batch: each value stacks the per-sample draws along dimension 0.
Draws = dict[str, torch.Tensor]
#: The encoder's (mean, std) per channel, as open_clip and transformers state them.
Normalization = tuple[tuple[float, ...], tuple[float, ...]]

#: The smallest side accepted (as `imagecorruptions`): below it some kernels exceed the image.
MIN_SIZE = 32
_MAX_SEED = 2**64
#: Bytes of pixels per CPU thread and render call (see `chunk_size`).
CPU_CHUNK_BYTES = 1 << 20


class Perturbation(ABC):
    """One registered perturbation. Subclasses implement `render` and, if random, `draw`."""

    #: Bump when a change alters the output for the same input and seed (cache keys include it).
    version: int = 1

    def __init__(self, info: PerturbationInfo) -> None:
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    def fingerprint(self, device: str = "cpu") -> str:
        """What identifies this implementation's output: name, version, external data, and the
        codec where the device changes it (`device`: where the stage runs it, `cpu` or `cuda`)."""
        return f"{self.name}:v{self.version}"

    def apply(
        self,
        images: torch.Tensor,
        severity: int,
        seeds: Sequence[int],
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        """Perturb a batch: float32 (B, 3, S, S) in [0,1] in, the same shape, dtype and device out.

        Sample i's output depends only on `images[i]`, `severity` and `seeds[i]`: it is bitwise
        identical in any batch. `normalization` is the encoder's (mean, std); only perturbations
        defined in the normalised input space (`info.needs_normalization`) use it.
        """
        self._check_severity(severity)
        _check_images(images, self.name)
        seeds = _check_seeds(seeds, images.shape[0], self.name)
        if self.info.needs_normalization:
            normalization = _check_normalization(normalization, self.name)
        out = torch.empty_like(images)
        if images.shape[0] == 0:
            return out
        step = chunk_size(images)
        for start in range(0, images.shape[0], step):
            part = slice(start, start + step)
            draws = self.sample(seeds[part], severity, images.shape[-1])
            draws = {key: value.to(images.device) for key, value in draws.items()}
            rendered = self.render(images[part], severity, draws, normalization=normalization)
            torch.clamp(rendered, 0.0, 1.0, out=out[part])
        return out

    def sample(self, seeds: Sequence[int], severity: int, size: int) -> Draws:
        """Every sample's random draws, each from a CPU generator seeded with its own seed."""
        per_sample = [self.draw(_generator(seed), severity, size) for seed in seeds]
        if not per_sample or not per_sample[0]:
            return {}
        return {key: torch.stack([draws[key] for draws in per_sample]) for key in per_sample[0]}

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        """One sample's random draws for an image of side `size`; none for deterministic ones."""
        return {}

    @abstractmethod
    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        """The perturbed batch, given the draws (on the images' device); may exceed [0,1]."""

    def _check_severity(self, severity: int) -> None:
        if isinstance(severity, bool) or severity not in self.info.severities:
            valid = ", ".join(str(s) for s in self.info.severities)
            raise ValueError(f"{self.name}: severity {severity!r} is not one of {valid}")


def chunk_size(images: torch.Tensor) -> int:
    """Images per `render` call: the whole batch on accelerators; on the CPU, as many as fit the
    cores' caches (about 1 MiB of pixels per thread), where memory-bound steps run several times
    faster. Results do not depend on it: every step is computed per image or elementwise."""
    if images.device.type != "cpu":
        return images.shape[0]
    per_image = images[0].numel() * images.element_size()
    return max(1, CPU_CHUNK_BYTES * torch.get_num_threads() // per_image)


def _generator(seed: int) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator


def _check_images(images: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.float32:
        raise TypeError(
            f"{name}: images must be float32 in [0,1], got {images.dtype} "
            "(convert uint8 images with images.float() / 255)"
        )
    shape = tuple(images.shape)
    if images.ndim != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise ValueError(
            f"{name}: images must have shape (B, 3, S, S), got {shape} "
            "(channels first, RGB, centre-cropped to a square)"
        )
    if shape[2] < MIN_SIZE:
        raise ValueError(f"{name}: image side {shape[2]} is below the minimum {MIN_SIZE}")
    if shape[0] == 0:
        return
    low, high = torch.aminmax(images)
    if not (low.item() >= 0.0 and high.item() <= 1.0):  # also rejects NaN
        raise ValueError(
            f"{name}: image values must lie in [0,1], got min {low.item():.4g}, "
            f"max {high.item():.4g} (divide uint8 images by 255; perturb before normalising)"
        )


def _check_seeds(seeds: Sequence[int], batch: int, name: str) -> list[int]:
    checked = []
    for index, seed in enumerate(seeds):
        try:
            value = operator.index(seed)  # int, or NumPy/torch integer scalars
        except TypeError:
            value = -1
        if isinstance(seed, bool) or not 0 <= value < _MAX_SEED:
            raise ValueError(
                f"{name}: seeds[{index}] = {seed!r} is not an integer in [0, 2**64) "
                "(use ubsafe.perturb.perturbation_seed)"
            )
        checked.append(value)
    if len(checked) != batch:
        raise ValueError(f"{name}: got {len(checked)} seeds for a batch of {batch} images")
    return checked


def _check_normalization(normalization: Normalization | None, name: str) -> Normalization:
    if normalization is None:
        raise ValueError(
            f"{name} is defined in the encoder's normalised input space: pass "
            "normalization=(mean, std), e.g. open_clip's OPENAI_DATASET_MEAN/STD"
        )
    mean, std = normalization
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(
            f"{name}: normalization must be (3 means, 3 positive stds), got {normalization!r}"
        )
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
