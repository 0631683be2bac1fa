"""Digital: ImageNet-C's brightness, contrast, elastic transform, pixelate and JPEG, and the extra
saturate.

Definitions follow hendrycks/robustness `ImageNet-C/imagenet_c/corruptions.py`.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from ubsafe.perturb._filters import gaussian_matrix, separable_filter
from ubsafe.perturb._ops import spatial_mean
from ubsafe.perturb._resample import bilinear_sample, pil_box_taps, resample_transposed
from ubsafe.perturb.base import Draws, Normalization, Perturbation

BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
#: (saturation factor, saturation offset)
SATURATE = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
JPEG_QUALITY = (25, 18, 15, 10, 7)
#: (alpha, sigma, affine spread) for 224-pixel images, written by ImageNet-C as multiples of 244
#: ("should have been 224"); they scale with the image side.
ELASTIC = (
    (244 * 2, 244 * 0.7, 244 * 0.1),
    (244 * 2, 244 * 0.08, 244 * 0.2),
    (244 * 0.05, 244 * 0.01, 244 * 0.02),
    (244 * 0.07, 244 * 0.01, 244 * 0.02),
    (244 * 0.12, 244 * 0.01, 244 * 0.02),
)
_ELASTIC_TRUNCATE = 3.0


class Brightness(Perturbation):
    """+c on the HSV value channel, clipped at 1 (skimage rgb2hsv / hsv2rgb).

    Hue and saturation are unchanged, so the round trip is a rescaling of the pixel by V'/V
    (a black pixel becomes grey V'); this is the same map without the HSV detour.
    """

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        value = images.amax(dim=1, keepdim=True)
        lifted = (value + BRIGHTNESS[severity - 1]).clamp(max=1.0)
        positive = value > 0
        ratio = lifted / torch.where(positive, value, 1.0)
        return torch.where(positive, images * ratio, lifted)


class Saturate(Perturbation):
    """HSV saturation S' = clip(S * s + b, 0, 1) (skimage rgb2hsv / hsv2rgb).

    With hue and value fixed, each channel is V - (V - x) * S'/S; a grey pixel (S = 0, hue 0)
    becomes (V, V(1 - S'), V(1 - S')), as skimage's hue-0 convention gives.
    """

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        factor, offset = SATURATE[severity - 1]
        value = images.amax(dim=1, keepdim=True)
        delta = value - images.amin(dim=1, keepdim=True)
        colored = delta > 0
        saturation = delta / torch.where(colored, value, 1.0)
        new_saturation = (saturation * factor + offset).clamp(0.0, 1.0)
        scale = value * new_saturation / torch.where(colored, delta, 1.0)
        out = value - (value - images) * scale
        faded = value * (1 - new_saturation)
        grey = torch.cat([value, faded, faded], dim=1)
        return torch.where(colored, out, grey)


class Contrast(Perturbation):
    """(x - m) * c + m with m the per-channel mean of the image."""

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        means = spatial_mean(images)
        return (images - means) * CONTRAST[severity - 1] + means


class Pixelate(Perturbation):
    """PIL BOX resize to int(S * c), then PIL BOX resize back (ImageNet-C's released images;
    `imagecorruptions` resizes back with NEAREST, which for upscaling picks the same pixels)."""

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        size = images.shape[-1]
        small = int(size * PIXELATE[severity - 1])
        down, up = pil_box_taps(size, small), pil_box_taps(small, size)
        # Transposed twice over: the second pass restores the orientation.
        return resample_transposed(resample_transposed(images, down, down), up, up)


class JpegCompression(Perturbation):
    """A JPEG round trip at ImageNet-C's quality. Images are rounded to 8 bits first.

    On the CPU: PIL (libjpeg), PIL's default 4:2:0 subsampling, one image at a time. On a CUDA
    device: torchvision's `encode_jpeg`/`decode_jpeg` on the device (nvJPEG), the whole batch in
    two calls. The codecs quantise differently, so the fingerprint names the codec of a CUDA run.
    """

    def fingerprint(self, device: str = "cpu") -> str:
        base = super().fingerprint(device)
        return f"{base}:codec=nvjpeg" if device.startswith("cuda") else base

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        quality = JPEG_QUALITY[severity - 1]
        pixels = (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        if pixels.is_cuda:
            return _nvjpeg_round_trip(pixels, quality).to(torch.float32) / 255.0
        channels_last = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        decoded = np.stack([_jpeg_round_trip(image, quality) for image in channels_last])
        out = torch.from_numpy(decoded).to(images.device).permute(0, 3, 1, 2)
        return out.to(torch.float32) / 255.0


def _nvjpeg_round_trip(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode a uint8 (B, 3, S, S) CUDA batch with nvJPEG, one call each way."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29: codecs move on
        encoded = encode_jpeg(list(pixels.unbind(0)), quality=quality)
        decoded = decode_jpeg(
            [blob.cpu() if blob.is_cuda else blob for blob in encoded],
            mode=ImageReadMode.RGB,
            device=pixels.device,
        )
    return torch.stack(decoded)


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded.load()
        return np.asarray(decoded)  # an RGB JPEG decodes to RGB


def elastic_parameters(severity: int, size: int) -> tuple[float, float, float]:
    """(alpha, sigma, affine spread) for an image of side `size`."""
    scale = size / 224.0
    alpha, sigma, spread = ELASTIC[severity - 1]
    return alpha * scale, sigma * scale, spread * scale


def affine_points(size: int) -> np.ndarray:
    """ImageNet-C's three reference points (x, y) as float32, shape (3, 2)."""
    centre = float(np.float32(size) // 2)
    square = size // 3
    return np.array(
        [
            [centre + square, centre + square],
            [centre + square, centre - square],
            [centre - square, centre - square],
        ],
        dtype=np.float32,
    )


def inverse_affine(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 map from target points back to source points (OpenCV's getAffineTransform, then
    the inverse that warpAffine applies), in float64."""
    ones = np.ones((3, 1))
    forward = np.linalg.solve(
        np.hstack([source, ones]).astype(np.float64), target.astype(np.float64)
    ).T
    linear, shift = forward[:, :2], forward[:, 2]
    inverse_linear = np.linalg.inv(linear)
    return np.hstack([inverse_linear, (-inverse_linear @ shift)[:, None]])


class ElasticTransform(Perturbation):
    """ImageNet-C's elastic transform: a random affine warp of three reference points
    (OpenCV warpAffine, bilinear, reflect-101 borders), then a displacement field of smoothed
    uniform noise (Gaussian, 'reflect', truncate 3) times alpha, sampled bilinearly with 'reflect'
    borders (SciPy map_coordinates). OpenCV quantises sampling positions to 1/32 pixel; here they
    are exact."""

    def draw(self, generator: torch.Generator, severity: int, size: int) -> Draws:
        return {
            "affine": torch.rand(3, 2, generator=generator, dtype=torch.float64),
            "dx": torch.rand(1, size, size, generator=generator, dtype=torch.float64),
            "dy": torch.rand(1, size, size, generator=generator, dtype=torch.float64),
        }

    def render(
        self,
        images: torch.Tensor,
        severity: int,
        draws: Draws,
        *,
        normalization: Normalization | None = None,
    ) -> torch.Tensor:
        size = images.shape[-1]
        alpha, sigma, spread = elastic_parameters(severity, size)
        device = images.device
        source = affine_points(size)
        maps = []
        for noise in draws["affine"].cpu().numpy():
            target = source + (-spread + (spread - -spread) * noise).astype(np.float32)
            maps.append(inverse_affine(source, target))
        inverse = torch.as_tensor(np.stack(maps), device=device)  # (B, 2, 3)
        grid = torch.arange(size, dtype=torch.float64, device=device)
        y, x = torch.meshgrid(grid, grid, indexing="ij")
        src_cols = inverse[:, 0, 0, None, None] * x + inverse[:, 0, 1, None, None] * y
        src_rows = inverse[:, 1, 0, None, None] * x + inverse[:, 1, 1, None, None] * y
        src_cols = src_cols + inverse[:, 0, 2, None, None]
        src_rows = src_rows + inverse[:, 1, 2, None, None]
        warped = bilinear_sample(images, src_rows, src_cols, "mirror")
        smooth = gaussian_matrix(sigma, _ELASTIC_TRUNCATE, size, "reflect")
        # Both fields in one call, in float32: ImageNet-C rounds them to float32 afterwards.
        noise = (torch.cat([draws["dx"], draws["dy"]], dim=1) * 2.0 - 1.0).to(images.dtype)
        fields = separable_filter(noise, smooth) * alpha
        rows = y + fields[:, 1].double()
        cols = x + fields[:, 0].double()
        return bilinear_sample(warped, rows, cols, "reflect")
