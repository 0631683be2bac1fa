"""Batched corruptions (ubsafe.perturb) against a per-image implementation of the same corruptions.

The baseline is the classic way to corrupt a dataset: one image at a time, uint8 HxWx3 in, NumPy,
SciPy, scikit-image, OpenCV and PIL as `imagecorruptions` does (its glass-blur loop in Numba, its
motion blur in NumPy), NumPy's global random state. Both run on the same images in the same run;
each is warmed up first, then timed `--repeats` times (median). Prints per-corruption times and
ratios, and the overall ratio: total baseline time / total batched time.

    python bench/bench_corruptions.py                  # 64 images of 224x224, severity 3
    python bench/bench_corruptions.py --severity all --images 32
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from numba import njit
from PIL import Image
from scipy import ndimage
from skimage import color
from skimage.filters import gaussian
from skimage.util import random_noise

from ubsafe.perturb import get_perturbation, list_perturbations, perturbation_seed
from ubsafe.perturb._frost import frost_source_setting, frost_textures
from ubsafe.perturb.base import Perturbation

CLIP_NORMALIZATION = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

# ------------------------------------------------------------------ per-image baseline
# Each takes a uint8 (S, S, 3) image and a severity and returns a float array in [0, 255].


def gaussian_noise(x: np.ndarray, severity: int) -> np.ndarray:
    c = [0.08, 0.12, 0.18, 0.26, 0.38][severity - 1]
    x = x / 255.0
    return np.clip(x + np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x: np.ndarray, severity: int) -> np.ndarray:
    c = [60, 25, 12, 5, 3][severity - 1]
    x = x / 255.0
    return np.clip(np.random.poisson(x * c) / float(c), 0, 1) * 255


def impulse_noise(x: np.ndarray, severity: int) -> np.ndarray:
    c = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    x = random_noise(x / 255.0, mode="s&p", amount=c, rng=np.random.randint(2**31))
    return np.clip(x, 0, 1) * 255


def speckle_noise(x: np.ndarray, severity: int) -> np.ndarray:
    c = [0.15, 0.2, 0.35, 0.45, 0.6][severity - 1]
    x = x / 255.0
    return np.clip(x + x * np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x: np.ndarray, severity: int) -> np.ndarray:
    c = [1, 2, 3, 4, 6][severity - 1]
    return np.clip(gaussian(x / 255.0, sigma=c, channel_axis=-1), 0, 1) * 255


@njit(cache=True)
def _glass_shuffle(x: np.ndarray, delta: int, iterations: int, seed: int) -> np.ndarray:
    np.random.seed(seed)
    size_h, size_w = x.shape[0], x.shape[1]
    for _ in range(iterations):
        for h in range(size_h - delta, delta, -1):
            for w in range(size_w - delta, delta, -1):
                dx, dy = np.random.randint(-delta, delta, size=(2,))
                hp, wp = h + dy, w + dx
                x[h, w], x[hp, wp] = x[hp, wp], x[h, w]
    return x


def glass_blur(x: np.ndarray, severity: int) -> np.ndarray:
    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][
        severity - 1
    ]
    x = np.uint8(gaussian(x / 255.0, sigma=sigma, channel_axis=-1) * 255)
    x = _glass_shuffle(x, delta, iterations, np.random.randint(2**31))
    return np.clip(gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def _disk(radius: int, alias_blur: float) -> np.ndarray:
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    ksize = (3, 3) if radius <= 8 else (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def defocus_blur(x: np.ndarray, severity: int) -> np.ndarray:
    radius, alias_blur = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    x = x / 255.0
    kernel = _disk(radius, alias_blur)
    channels = [cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]
    return np.clip(np.stack(channels, axis=2), 0, 1) * 255


def _shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    height, width = image.shape[:2]
    pad = ((abs(dy), abs(dy)), (abs(dx), abs(dx))) + ((0, 0),) * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge")
    return padded[abs(dy) + dy : abs(dy) + dy + height, abs(dx) + dx : abs(dx) + dx + width]


def _motion_blur(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    width = 2 * math.ceil(radius) + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma * sigma))
    kernel /= kernel.sum()
    px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(px, py)
    blurred = np.zeros_like(x, dtype=np.float32)
    for i in range(width):
        dy = math.ceil(i * px / hyp - 0.5)
        dx = math.ceil(i * py / hyp - 0.5)
        blurred = blurred + kernel[i] * _shift(x, dx, dy)
    return blurred


def motion_blur(x: np.ndarray, severity: int) -> np.ndarray:
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    return np.clip(_motion_blur(x, radius, sigma, np.random.uniform(-45, 45)), 0, 255)


def _clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    height = image.shape[0]
    crop = int(np.ceil(height / factor))
    top = (height - crop) // 2
    zoomed = ndimage.zoom(image[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - height) // 2
    return zoomed[trim : trim + height, trim : trim + height]


def zoom_blur(x: np.ndarray, severity: int) -> np.ndarray:
    zooms = [
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02),
        np.arange(1, 1.31, 0.03),
    ][severity - 1]
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in zooms:
        out += _clipped_zoom(x, factor)
    return np.clip((x + out) / (len(zooms) + 1), 0, 1) * 255


def snow(x: np.ndarray, severity: int) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, weight = [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ][severity - 1]
    x = np.array(x, dtype=np.float32) / 255.0
    layer = np.random.normal(size=x.shape[:2], loc=loc, scale=scale)
    layer = _clipped_zoom(layer[..., np.newaxis], zoom)
    layer[layer < threshold] = 0
    layer = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8) / 255.0
    layer = _motion_blur(layer, radius, sigma, np.random.uniform(-135, -45))
    layer = np.round(layer * 255).astype(np.uint8)[..., np.newaxis] / 255.0
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(x.shape[0], x.shape[1], 1)
    x = weight * x + (1 - weight) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def frost(x: np.ndarray, severity: int) -> np.ndarray:
    image_weight, frost_weight = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][
        severity - 1
    ]
    textures = frost_textures(x.shape[0], frost_source_setting()).images
    texture = textures[np.random.randint(5)] * 255.0
    top = np.random.randint(0, texture.shape[0] - x.shape[0])
    left = np.random.randint(0, texture.shape[1] - x.shape[1])
    crop = texture[top : top + x.shape[0], left : left + x.shape[1]]
    return np.clip(image_weight * np.array(x) + frost_weight * crop, 0, 255)


def _plasma_fractal(mapsize: int, decay: float) -> np.ndarray:
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * np.random.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        total = corners + np.roll(corners, shift=-1, axis=0)
        total += np.roll(total, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(total)
        centres = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(left)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(top)
        stepsize //= 2
        wibble /= decay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x: np.ndarray, severity: int) -> np.ndarray:
    strength, decay = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][severity - 1]
    size = x.shape[0]
    x = x / 255.0
    peak = x.max()
    x = x + strength * _plasma_fractal(1 << (size - 1).bit_length(), decay)[:size, :size, None]
    return np.clip(x * peak / (peak + strength), 0, 1) * 255


def brightness(x: np.ndarray, severity: int) -> np.ndarray:
    c = [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1]
    x = color.rgb2hsv(x / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(color.hsv2rgb(x), 0, 1) * 255


def saturate(x: np.ndarray, severity: int) -> np.ndarray:
    s, b = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)][severity - 1]
    x = color.rgb2hsv(x / 255.0)
    x[:, :, 1] = np.clip(x[:, :, 1] * s + b, 0, 1)
    return np.clip(color.hsv2rgb(x), 0, 1) * 255


def contrast(x: np.ndarray, severity: int) -> np.ndarray:
    c = [0.4, 0.3, 0.2, 0.1, 0.05][severity - 1]
    x = x / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(image: np.ndarray, severity: int) -> np.ndarray:
    size = image.shape[0]
    alpha, sigma, spread = (
        v * size / 224
        for v in [
            (244 * 2, 244 * 0.7, 244 * 0.1),
            (244 * 2, 244 * 0.08, 244 * 0.2),
            (244 * 0.05, 244 * 0.01, 244 * 0.02),
            (244 * 0.07, 244 * 0.01, 244 * 0.02),
            (244 * 0.12, 244 * 0.01, 244 * 0.02),
        ][severity - 1]
    )
    image = np.array(image, dtype=np.float32) / 255.0
    centre = np.float32((size, size)) // 2
    square = size // 3
    pts1 = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    pts2 = pts1 + np.random.uniform(-spread, spread, size=pts1.shape).astype(np.float32)
    matrix = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_REFLECT_101)
    dx = gaussian(np.random.uniform(-1, 1, (size, size)), sigma, mode="reflect", truncate=3) * alpha
    dy = gaussian(np.random.uniform(-1, 1, (size, size)), sigma, mode="reflect", truncate=3) * alpha
    dx, dy = dx.astype(np.float32)[..., None], dy.astype(np.float32)[..., None]
    xx, yy, zz = np.meshgrid(np.arange(size), np.arange(size), np.arange(3))
    indices = np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)), np.reshape(zz, (-1, 1))
    out = ndimage.map_coordinates(image, indices, order=1, mode="reflect").reshape(image.shape)
    return np.clip(out, 0, 1) * 255


def pixelate(x: np.ndarray, severity: int) -> np.ndarray:
    c = [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1]
    size = x.shape[0]
    image = Image.fromarray(x)
    image = image.resize((int(size * c), int(size * c)), Image.BOX).resize((size, size), Image.BOX)
    return np.asarray(image)


def jpeg_compression(x: np.ndarray, severity: int) -> np.ndarray:
    quality = [25, 18, 15, 10, 7][severity - 1]
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def spatter(x: np.ndarray, severity: int) -> np.ndarray:
    loc, scale, sigma, threshold, amount, mud = [
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ][severity - 1]
    x = np.array(x, dtype=np.float32) / 255.0
    liquid = gaussian(np.random.normal(size=x.shape[:2], loc=loc, scale=scale), sigma=sigma)
    liquid[liquid < threshold] = 0
    if mud == 0:
        liquid = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        mask = liquid * dist
        mask = mask / mask.max() * amount
        return np.clip(x + mask[..., None] * (np.array([175, 238, 238]) / 255.0), 0, 1) * 255
    mask = np.where(liquid > threshold, 1, 0)
    mask = gaussian(mask.astype(np.float32), sigma=amount)
    mask[mask < 0.8] = 0
    colour = np.array([63, 42, 20]) / 255.0 * mask[..., None]
    return np.clip(x * (1 - mask[..., None]) + colour, 0, 1) * 255


def paper_gaussian_noise(x: np.ndarray, severity: int) -> np.ndarray:
    mean, std = (np.array(v) for v in CLIP_NORMALIZATION)
    normalised = (x / 255.0 - mean) / std
    noise = np.random.normal(size=x.shape)
    normalised = normalised + 0.01 * noise / np.linalg.norm(noise)
    return np.clip(normalised * std + mean, 0, 1) * 255


BASELINES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    fn.__name__: fn
    for fn in (
        gaussian_noise,
        shot_noise,
        impulse_noise,
        defocus_blur,
        glass_blur,
        motion_blur,
        zoom_blur,
        snow,
        frost,
        fog,
        brightness,
        contrast,
        elastic_transform,
        pixelate,
        jpeg_compression,
        speckle_noise,
        gaussian_blur,
        spatter,
        saturate,
        paper_gaussian_noise,
    )
}

# ------------------------------------------------------------------ timing


def make_images(count: int, size: int) -> np.ndarray:
    """Photo-like uint8 images: smooth colour fields, a few shapes, fine texture."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        image = np.stack(
            [
                0.5
                + 0.4
                * np.sin(2 * np.pi * (rng.random() * 3 * xx + rng.random() * 2 * yy + rng.random()))
                for _ in range(3)
            ],
            axis=2,
        )
        for _ in range(4):
            disk = (xx - rng.random()) ** 2 + (yy - rng.random()) ** 2 < rng.random() * 0.05
            image[disk] = rng.random(3)
        image += 0.04 * rng.standard_normal(image.shape)
        out[i] = np.round(np.clip(image, 0, 1) * 255)
    return out


def time_median(fn: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--severity", default="3", help="1-5, or 'all'")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated perturbation names")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1, like the single-threaded baseline; 0: torch's default)",
    )
    parser.add_argument(
        "--device", default="cpu", help="where the batched side runs: cpu, cuda (baseline: CPU)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or CPU time of this process (all threads; steadier on a shared machine)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n] or [i.name for i in list_perturbations()]
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    uint8_images = make_images(args.images, args.size)
    print(
        f"{args.images} images of {args.size}x{args.size}, batched on {args.device}, "
        f"torch {torch.__version__} on "
        f"{torch.get_num_threads()} threads, {args.clock} clock, median of {args.repeats}"
    )
    header = ("perturbation", "sev", "per-image ms/img", "batched ms/img", "ratio")
    print(f"{header[0]:22s} {header[1]:>3s} {header[2]:>17s} {header[3]:>15s} {header[4]:>7s}")
    total_base = total_batched = 0.0
    ratios = []
    for name in names:
        perturbation = get_perturbation(name)
        if args.severity == "all":
            severities = perturbation.info.severities
        elif int(args.severity) in perturbation.info.severities:
            severities = (int(args.severity),)
        else:  # paper_gaussian_noise has one level
            severities = perturbation.info.severities[:1]
        for severity in severities:
            base, batched = measure(
                perturbation,
                BASELINES[name],
                severity,
                uint8_images,
                args.repeats,
                clock,
                device=args.device,
            )
            total_base += base
            total_batched += batched
            ratios.append(base / batched)
            print(
                f"{name:22s} {severity:3d} {1e3 * base / args.images:17.2f} "
                f"{1e3 * batched / args.images:15.2f} {base / batched:7.1f}x"
            )
    geometric = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(
        f"overall: per-image {total_base:.2f} s, batched {total_batched:.2f} s, "
        f"ratio {total_base / total_batched:.1f}x "
        f"(geometric mean of ratios {geometric:.1f}x; goal >= 10x)"
    )


def measure(
    perturbation: Perturbation,
    baseline: Callable[[np.ndarray, int], np.ndarray],
    severity: int,
    uint8_images: np.ndarray,
    repeats: int,
    clock: Callable[[], float],
    *,
    device: str = "cpu",
) -> tuple[float, float]:
    """Seconds for the per-image baseline and for one batched call, on the same images."""
    name = perturbation.name
    batch = torch.from_numpy(uint8_images).permute(0, 3, 1, 2).float().div(255).contiguous()
    batch = batch.to(device)
    seeds = [perturbation_seed(0, f"img-{i}", name, severity) for i in range(len(batch))]

    def run_batched() -> torch.Tensor:
        out = perturbation.apply(batch, severity, seeds, normalization=CLIP_NORMALIZATION)
        if out.is_cuda:
            torch.cuda.synchronize()
        return out

    def run_baseline() -> list[np.ndarray]:
        np.random.seed(0)
        return [baseline(image, severity) for image in uint8_images]

    run_batched()  # warm-up: caches, tables, Numba
    for image in uint8_images[:2]:
        baseline(image, severity)  # warm-up: Numba, caches
    return time_median(run_baseline, repeats, clock), time_median(run_batched, repeats, clock)


if __name__ == "__main__":
    main()
