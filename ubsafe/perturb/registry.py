"""The perturbation registry: one entry per perturbation, importable without torch.

`ubsafe perturbations` lists this table, and the embed stage loops over it, so reading it must stay
instant: an entry names its implementation as `module:Class` and `get_perturbation` imports the
module only when the perturbation is used. Adding a perturbation is one entry here plus its class.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ubsafe.perturb.base import Perturbation

Family = Literal["noise", "blur", "weather", "digital", "paper"]
Suite = Literal["imagenet-c", "imagenet-c-extra", "unsafebench"]

ALL_SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class PerturbationInfo:
    """What a perturbation is, without loading it.

    `batched` is False where part of the work runs image by image (a codec, an OpenCV pipeline);
    `notes` says which part and every deviation from the reference definition.
    """

    name: str
    family: Family
    suite: Suite
    description: str
    batched: bool
    severities: tuple[int, ...]
    implementation: str
    needs_normalization: bool = False
    notes: str = ""


def _entry(
    name: str,
    family: Family,
    description: str,
    implementation: str,
    *,
    suite: Suite = "imagenet-c",
    batched: bool = True,
    severities: tuple[int, ...] = ALL_SEVERITIES,
    needs_normalization: bool = False,
    notes: str = "",
) -> PerturbationInfo:
    return PerturbationInfo(
        name=name,
        family=family,
        suite=suite,
        description=description,
        batched=batched,
        severities=severities,
        implementation=f"ubsafe.perturb.{implementation}",
        needs_normalization=needs_normalization,
        notes=notes,
    )


_REGISTRY: tuple[PerturbationInfo, ...] = (
    _entry(
        "gaussian_noise", "noise", "additive Gaussian noise, sigma .08-.38", "noise:GaussianNoise"
    ),
    _entry(
        "shot_noise",
        "noise",
        "Poisson photon noise, Poisson(x*lam)/lam with lam 60-3",
        "noise:ShotNoise",
        notes=(
            "Poisson draws by table inversion from per-sample uniforms; values within 1e-4/255 "
            "of an 8-bit level count as the level"
        ),
    ),
    _entry(
        "impulse_noise",
        "noise",
        "salt-and-pepper noise on 3-27% of the values",
        "noise:ImpulseNoise",
    ),
    _entry(
        "defocus_blur",
        "blur",
        "anti-aliased disk kernel, radius 3-10",
        "blur:DefocusBlur",
        notes="FFT correlation with reflect-101 borders, one transform per image",
    ),
    _entry(
        "glass_blur",
        "blur",
        "Gaussian blur, local pixel moves, Gaussian blur",
        "blur:GlassBlur",
        notes=(
            "ImageNet-C's pixel 'swap' copies (x[h,w] = x[h',w']); reproduced as an index map: "
            "a compiled sequential loop per image on the CPU, pointer jumping elsewhere"
        ),
    ),
    _entry(
        "motion_blur",
        "blur",
        "one-sided Gaussian streak at a random angle in [-45, 45] degrees",
        "blur:MotionBlur",
        notes=(
            "ImageMagick's MotionBlurImage kernel re-implemented (no 8-bit rounding of the "
            "result); one kernel per image (its angle): per-image views on the CPU, one "
            "gather per tap for the batch elsewhere"
        ),
    ),
    _entry("zoom_blur", "blur", "average of centre zooms up to 1.30x", "blur:ZoomBlur"),
    _entry(
        "snow",
        "weather",
        "zoomed, thresholded, motion-blurred snow layer over a greyed image",
        "weather:Snow",
    ),
    _entry(
        "frost",
        "weather",
        "blend with a random crop of a frost texture",
        "weather:Frost",
        notes=(
            "procedural frost textures unless UBSAFE_FROST_TEXTURES names the ImageNet-C "
            "frost images (a folder, or 'imagecorruptions' for the installed package)"
        ),
    ),
    _entry("fog", "weather", "plasma-fractal fog (diamond-square)", "weather:Fog"),
    _entry("brightness", "digital", "+.1 to +.5 on the HSV value channel", "digital:Brightness"),
    _entry("contrast", "digital", "per-channel contrast scaled to .4-.05", "digital:Contrast"),
    _entry(
        "elastic_transform",
        "digital",
        "random affine warp, then a smooth random displacement field",
        "digital:ElasticTransform",
        notes=(
            "ImageNet-C's parameters (written as multiples of 244) scale with the side; "
            "exact bilinear sampling where OpenCV quantises positions to 1/32 pixel"
        ),
    ),
    _entry(
        "pixelate",
        "digital",
        "PIL box downscale to 60-25%, box upscale back",
        "digital:Pixelate",
    ),
    _entry(
        "jpeg_compression",
        "digital",
        "PIL JPEG round trip at quality 25-7",
        "digital:JpegCompression",
        batched=False,
        notes="a real codec: PIL/libjpeg one image at a time on the CPU; on CUDA nvJPEG through "
        "torchvision, the batch at once (the codec is part of the variant's fingerprint)",
    ),
    _entry(
        "speckle_noise",
        "noise",
        "multiplicative Gaussian noise, sigma .15-.6",
        "noise:SpeckleNoise",
        suite="imagenet-c-extra",
    ),
    _entry(
        "gaussian_blur",
        "blur",
        "Gaussian blur, sigma 1-6",
        "blur:GaussianBlur",
        suite="imagenet-c-extra",
    ),
    _entry(
        "spatter",
        "weather",
        "water drops (severities 1-3) or mud (4-5)",
        "weather:Spatter",
        suite="imagenet-c-extra",
        batched=False,
        notes="the water mask (Canny, distance transform): on the CPU per image with OpenCV; on "
        "CUDA, or without OpenCV's IPP build, by batched tensor ops that give its bytes",
    ),
    _entry(
        "saturate",
        "digital",
        "HSV saturation scaled by .3-20",
        "digital:Saturate",
        suite="imagenet-c-extra",
    ),
    _entry(
        "paper_gaussian_noise",
        "paper",
        "UnsafeBench GN: Gaussian noise of L2 norm 0.01 in the encoder's normalised space",
        "noise:PaperGaussianNoise",
        suite="unsafebench",
        severities=(1,),
        needs_normalization=True,
        notes="one level (severity 1 only); clipped to [0,1] pixels",
    ),
)

_BY_NAME: dict[str, PerturbationInfo] = {info.name: info for info in _REGISTRY}


def list_perturbations() -> list[PerturbationInfo]:
    """Every registered perturbation, ImageNet-C's 15 first, then the 4 extra, then the paper's."""
    return list(_REGISTRY)


class UnknownPerturbationError(ValueError):
    """A perturbation name that is not in the registry."""


def perturbation_info(name: str) -> PerturbationInfo:
    """The registry entry for `name`; an unknown name raises `UnknownPerturbationError`."""
    try:
        return _BY_NAME[name]
    except KeyError:
        valid = ", ".join(_BY_NAME)
        raise UnknownPerturbationError(
            f"unknown perturbation {name!r}; valid names: {valid} (see `ubsafe perturbations`)"
        ) from None


def get_perturbation(name: str) -> Perturbation:
    """Load the implementation of `name` (imports torch); unknown names list the valid ones."""
    info = perturbation_info(name)
    module_name, _, class_name = info.implementation.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    perturbation: Perturbation = cls(info)
    return perturbation
