"""Frost textures for the frost corruption.

ImageNet-C blends images with random crops of five frost photographs (frost1-5; frost6 is listed
but never drawn). They cannot be downloaded on offline compute nodes, so by default ubsafe uses
five deterministic procedural textures instead: ice needles with short side branches over a smooth
blue-grey base, with the photographs' range of brightness (mean grey about 0.45-0.8). Results
with procedural frost are therefore not comparable with published ImageNet-C frost numbers.

Set UBSAFE_FROST_TEXTURES to a folder holding frost1.png, frost2.png, frost3.png, frost4.jpg and
frost5.jpg (ImageNet-C's `create_c` folder), or to `imagecorruptions` to read them from an
installed `imagecorruptions` package (without importing it). The choice is part of the frost
perturbation's fingerprint, so caches never mix the two.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

ENV_VAR = "UBSAFE_FROST_TEXTURES"
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
PROCEDURAL_VERSION = "procedural-v1"
_PROCEDURAL_SEED = 7057

# Per texture: tint (RGB), base brightness, crystal density; spans the photographs' range.
_STYLES = (
    ((0.55, 0.85, 0.95), 0.42, 0.8),
    ((0.92, 0.94, 0.98), 0.62, 1.6),
    ((0.88, 0.92, 0.97), 0.55, 1.3),
    ((0.85, 0.90, 0.96), 0.45, 1.0),
    ((0.80, 0.86, 0.92), 0.32, 1.2),
)


@dataclass(frozen=True)
class FrostTextures:
    """Five RGB textures (H, W, 3) float32 in [0,1], each larger than the image side."""

    images: tuple[np.ndarray, ...]
    source: str  # "procedural-v1" or "files-<sha256 prefix>"


def frost_source_setting() -> str:
    """The current UBSAFE_FROST_TEXTURES value ('' for procedural)."""
    return os.environ.get(ENV_VAR, "").strip()


@functools.lru_cache(maxsize=8)
def frost_source_id(setting: str) -> str:
    """'procedural-v1', or 'files-' and a digest of the five texture files."""
    if not setting:
        return PROCEDURAL_VERSION
    digest = hashlib.sha256()
    for path in _texture_paths(setting):
        digest.update(path.read_bytes())
    return f"files-{digest.hexdigest()[:16]}"


@functools.lru_cache(maxsize=8)
def frost_textures(size: int, setting: str) -> FrostTextures:
    """The five textures for images of side `size` under the given UBSAFE_FROST_TEXTURES value."""
    if not setting:
        images = tuple(_procedural(index, size) for index in range(len(_STYLES)))
    else:
        images = tuple(_fit(_decode(path), size) for path in _texture_paths(setting))
    return FrostTextures(images=images, source=frost_source_id(setting))


def _texture_paths(setting: str) -> list[Path]:
    folder = _texture_folder(setting)
    paths = [folder / name for name in FROST_FILES]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{ENV_VAR}={setting!r}: missing {', '.join(missing)}; the folder must hold "
            f"{', '.join(FROST_FILES)} (unset {ENV_VAR} for procedural frost)"
        )
    return paths


def _texture_folder(setting: str) -> Path:
    if setting != "imagecorruptions":
        return Path(setting).expanduser()
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{ENV_VAR}=imagecorruptions but the imagecorruptions package is not installed "
            "(pip install imagecorruptions, or point the variable at a folder of frost images)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "frost"


def _decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _fit(texture: np.ndarray, size: int) -> np.ndarray:
    """Upscale a texture that cannot hold a crop of `size` (as `imagecorruptions`, 1.1x margin)."""
    height, width = texture.shape[:2]
    if height > size and width > size:
        return texture
    scale = 1.1 * max(size / height, size / width)
    new_size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
    channels = [
        np.asarray(
            Image.fromarray(texture[:, :, c], mode="F").resize(new_size, Image.Resampling.BICUBIC)
        )
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)


def _procedural(index: int, size: int) -> np.ndarray:
    """A deterministic frost-like texture of about (1.6 S, 2.4 S): needles over a smooth base."""
    tint, brightness, density = _STYLES[index]
    height, width = round(1.6 * size) + 2, round(2.4 * size) + 2
    rng = np.random.default_rng([_PROCEDURAL_SEED, index, size])
    base = ndimage.gaussian_filter(rng.standard_normal((height, width)), sigma=size / 10)
    base = (base - base.min()) / max(np.ptp(base), 1e-12)
    crystals = _needles(rng, height, width, size, density)
    gray = np.clip(brightness + 0.18 * (base - 0.5) + 0.45 * crystals, 0.0, 1.0)
    return (gray[:, :, None] * np.asarray(tint)[None, None, :]).astype(np.float32)


def _needles(
    rng: np.random.Generator, height: int, width: int, size: int, density: float
) -> np.ndarray:
    """Straight ice needles with side branches at +-60 degrees, splatted and softened."""
    count = int(density * height * width / 120)
    starts = rng.random((count, 2)) * (height, width)
    angles = rng.random(count) * np.pi
    lengths = rng.exponential(size / 18, count) + 2.0
    strengths = rng.uniform(0.3, 1.0, count)
    branch_from = rng.random(count) < 0.5
    branch_angles = angles + np.where(rng.random(count) < 0.5, np.pi / 3, -np.pi / 3)
    branch_starts = starts + (lengths * 0.4)[:, None] * np.stack(
        [np.sin(angles), np.cos(angles)], axis=1
    )
    segments = [
        (starts, angles, lengths, strengths),
        (
            branch_starts[branch_from],
            branch_angles[branch_from],
            0.5 * lengths[branch_from],
            0.8 * strengths[branch_from],
        ),
    ]
    canvas = np.zeros((height, width), dtype=np.float64)
    for origin, angle, length, strength in segments:
        steps = np.arange(0.0, float(length.max()) + 0.5, 0.5)
        along = steps[None, :]
        inside = along <= length[:, None]
        rows = origin[:, 0:1] + along * np.sin(angle)[:, None]
        cols = origin[:, 1:2] + along * np.cos(angle)[:, None]
        # needles taper: bright at the root, fading to the tip
        weight = strength[:, None] * (1.0 - along / (length[:, None] + 1.0))
        rows_i = np.mod(np.round(rows[inside]).astype(np.int64), height)
        cols_i = np.mod(np.round(cols[inside]).astype(np.int64), width)
        np.add.at(canvas, (rows_i, cols_i), weight[inside])
    canvas = ndimage.gaussian_filter(canvas, sigma=0.6)
    return 1.0 - np.exp(-1.5 * canvas)
