"""Perturbations of images as batched torch ops on float32 [0,1] tensors of shape (B, 3, S, S).

The ImageNet-C corruptions (15 + 4, severities 1-5, the reference parameters), JPEG through a real
codec, and the UnsafeBench Gaussian-noise attack. Every random draw of sample i comes from
`seeds[i]` alone (see `perturbation_seed`), and every step is either elementwise, a gather, or a
library call of a fixed per-image shape, so an image's result is bitwise the same whatever its
batch, its neighbours or the thread count.

Spatial parameters are ImageNet-C's pixel values, defined for 224x224 images, and are kept as they
are at other sizes (as the `imagecorruptions` package does), except where ImageNet-C itself writes
them as fractions of the image side (elastic_transform), which scale with the side.

Outputs stay float: ImageNet-C's own 8-bit rounding of every result (and the JPEG quality-85
files it was released as) is not applied; only its intermediate 8-bit steps are (glass blur's
first blur, snow's layer). Each registry entry's `notes` lists what else differs.

Adding a perturbation: one entry in `registry._REGISTRY` and a `Perturbation` subclass whose
`draw` takes the sample's randomness from its generator and whose `render` is deterministic.
This package imports no torch at import time; `get_perturbation` loads an implementation.
"""

from ubsafe.perturb.registry import (
    PerturbationInfo,
    UnknownPerturbationError,
    get_perturbation,
    list_perturbations,
    perturbation_info,
)
from ubsafe.perturb.seeding import perturbation_seed, perturbation_seeds

__all__ = [
    "PerturbationInfo",
    "UnknownPerturbationError",
    "get_perturbation",
    "list_perturbations",
    "perturbation_info",
    "perturbation_seed",
    "perturbation_seeds",
]
