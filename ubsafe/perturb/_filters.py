"""Linear filters with the boundary rules of SciPy and OpenCV, batch-invariant by construction.

Short separable kernels run as weighted sums of shifted views of the padded batch: elementwise,
added tap by tap. Long ones become matrices (the kernel plus the boundary rule folded in), so a
2-D filter is `rows @ image @ cols.T`, whose cost does not grow with the kernel. An optimised
GEMM or FFT may pick its algorithm (blocking, split-K, vector width) from the tensor's shape, and
so round a sample differently in a batch of 32 than alone: those library calls run once per
image, always with the same per-image shape.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

#: SciPy's names: reflect = d c b a | a b c d, mirror = d c b | a b c d (OpenCV's REFLECT_101),
#: nearest = a a a | a b c d, constant = 0 0 0 | a b c d.
BoundaryMode = Literal["reflect", "mirror", "nearest", "constant"]


def fold_index(index: np.ndarray, size: int, mode: BoundaryMode) -> np.ndarray:
    """Map integer positions on the infinitely extended axis into [0, size); -1 for constant."""
    index = np.asarray(index, dtype=np.int64)
    if mode == "nearest":
        return np.clip(index, 0, size - 1)
    if mode == "constant":
        return np.where((index >= 0) & (index < size), index, -1)
    if mode == "reflect":
        period = 2 * size
        folded = np.mod(index, period)
        return np.where(folded >= size, period - 1 - folded, folded)
    if mode == "mirror":
        if size == 1:
            return np.zeros_like(index)
        period = 2 * size - 2
        folded = np.mod(index, period)
        return np.where(folded >= size, period - folded, folded)
    raise ValueError(f"unknown boundary mode {mode!r}; use reflect, mirror, nearest or constant")


def gaussian_kernel1d(sigma: float, truncate: float) -> np.ndarray:
    """SciPy's `gaussian_filter1d` weights: radius int(truncate * sigma + 0.5), summing to 1."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 / (float(sigma) ** 2) * x**2)
    return weights / weights.sum()


def filter_matrix(kernel: np.ndarray, size: int, mode: BoundaryMode) -> np.ndarray:
    """The (size, size) matrix of correlating a signal with the centred odd-length `kernel`.

    `out = matrix @ signal` equals `scipy.ndimage.correlate1d(signal, kernel, mode=mode)`,
    including kernels longer than the signal (the boundary rule is applied repeatedly).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 1 or kernel.size % 2 != 1:
        raise ValueError(f"kernel must be 1-D with an odd length, got shape {kernel.shape}")
    radius = kernel.size // 2
    rows = np.repeat(np.arange(size), kernel.size)
    taps = np.tile(np.arange(kernel.size), size)
    cols = fold_index(rows + taps - radius, size, mode)
    keep = cols >= 0
    matrix = np.zeros((size, size), dtype=np.float64)
    np.add.at(matrix, (rows[keep], cols[keep]), kernel[taps[keep]])
    return matrix


@functools.lru_cache(maxsize=64)
def gaussian_matrix(sigma: float, truncate: float, size: int, mode: BoundaryMode) -> np.ndarray:
    """`filter_matrix` of SciPy's Gaussian (what `skimage.filters.gaussian` applies per axis)."""
    matrix = filter_matrix(gaussian_kernel1d(sigma, truncate), size, mode)
    matrix.setflags(write=False)
    return matrix


def gemm_dtype(images: torch.Tensor) -> torch.dtype:
    """The GEMM precision for `images`: their own on the CPU; float64 on accelerators, where a
    process-wide TF32 setting could otherwise change how float32 products round."""
    if images.device.type == "cpu" or images.dtype == torch.float64:
        return images.dtype
    return torch.float64


def separable_filter(
    images: torch.Tensor, rows: np.ndarray, cols: np.ndarray | None = None
) -> torch.Tensor:
    """`rows @ image @ cols.T` for each (C, H, W) image of a (B, C, H, W) batch, a GEMM pair each.

    `cols` defaults to `rows` (the same filter along both axes). The output has the input's dtype.
    """
    device = images.device
    dtype = gemm_dtype(images)
    left = torch.tensor(rows, dtype=dtype, device=device)
    right = left.T if cols is None else torch.tensor(cols, dtype=dtype, device=device).T
    out = torch.empty_like(images)
    for index in range(images.shape[0]):
        image = images[index].to(dtype)
        out[index] = torch.matmul(torch.matmul(left, image), right).to(images.dtype)
    return out


#: Up to this many taps a separable filter runs as shifted views (elementwise, batched); longer
#: kernels as a GEMM pair per image, whose cost does not grow with the kernel.
SHIFT_MAX_TAPS = 15
_PAD_MODES = {"nearest": "replicate", "mirror": "reflect", "constant": "constant"}


def shift_filter(images: torch.Tensor, kernel: np.ndarray, mode: BoundaryMode) -> torch.Tensor:
    """Correlate the last two dimensions with the odd 1-D `kernel` (both axes), by summing
    weighted shifted views of the padded batch, tap by tap (nearest, mirror or constant borders).
    """
    radius = kernel.size // 2
    height, width = images.shape[-2:]
    padded = F.pad(images, (radius,) * 4, mode=_PAD_MODES[mode])
    weights = kernel.tolist()
    rows: torch.Tensor | None = None
    for tap, weight in enumerate(weights):
        term = padded[..., tap : tap + height, :] * weight
        rows = term if rows is None else rows + term
    assert rows is not None
    out: torch.Tensor | None = None
    for tap, weight in enumerate(weights):
        term = rows[..., :, tap : tap + width] * weight
        out = term if out is None else out + term
    assert out is not None
    return out


def gaussian_filter(
    images: torch.Tensor, sigma: float, truncate: float, mode: BoundaryMode
) -> torch.Tensor:
    """SciPy's `gaussian_filter` over the last two dimensions (what skimage's `gaussian` does per
    channel), as shifted views for short kernels and a GEMM pair per image for long ones."""
    kernel = gaussian_kernel1d(sigma, truncate)
    if (
        kernel.size <= SHIFT_MAX_TAPS
        and mode in _PAD_MODES
        and kernel.size // 2 < min(images.shape[-2:])
    ):
        return shift_filter(images, kernel, mode)
    return separable_filter(images, gaussian_matrix(sigma, truncate, images.shape[-1], mode))


def _fast_fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFT sizes with small prime factors run fastest."""
    candidate = n
    while True:
        rest = candidate
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return candidate
        candidate += 1


@functools.lru_cache(maxsize=16)
def _kernel_spectrum(kernel_bytes: bytes, ksize: int, n: int, device: str) -> torch.Tensor:
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(ksize, ksize)
    radius = ksize // 2
    # Correlation as circular convolution: put the flipped kernel's centre at the origin.
    full = np.zeros((n, n), dtype=np.float64)
    offsets = np.arange(-radius, radius + 1)
    full[np.ix_(offsets % n, offsets % n)] = kernel[::-1, ::-1]
    return torch.fft.rfft2(torch.as_tensor(full, dtype=torch.float32)).to(device)


def _complex_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a * b with separately rounded real products and sums: a SIMD complex multiply may fuse
    them, and whether a value takes the SIMD or the scalar path depends on the thread split."""
    ar, ai = a.real, a.imag
    br, bi = b.real, b.imag
    return torch.complex(ar * br - ai * bi, ar * bi + ai * br)


def fft_filter2d(images: torch.Tensor, kernel: np.ndarray, mode: BoundaryMode) -> torch.Tensor:
    """2-D correlation of every channel with the odd square `kernel` (OpenCV `filter2D`).

    The image is padded by the kernel radius with `mode` (mirror = OpenCV's default
    BORDER_REFLECT_101), then convolved by FFT, one image per transform.
    """
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    ksize = kernel.shape[0]
    if kernel.shape != (ksize, ksize) or ksize % 2 != 1:
        raise ValueError(f"kernel must be square with an odd side, got shape {kernel.shape}")
    radius = ksize // 2
    pad_mode = _PAD_MODES.get(mode)
    if pad_mode is None:
        raise ValueError(f"fft_filter2d supports mirror, nearest and constant, not {mode!r}")
    size = images.shape[-1]
    n = _fast_fft_size(size + 2 * radius)
    spectrum = _kernel_spectrum(kernel.tobytes(), ksize, n, str(images.device))
    out = torch.empty_like(images)
    for index in range(images.shape[0]):
        padded = F.pad(images[index : index + 1], (radius,) * 4, mode=pad_mode)[0]
        product = _complex_product(torch.fft.rfft2(padded, s=(n, n)), spectrum)
        full = torch.fft.irfft2(product, s=(n, n))
        out[index] = full[:, radius : radius + size, radius : radius + size]
    return out
