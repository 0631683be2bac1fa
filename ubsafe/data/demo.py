"""A procedural dataset in the UnsafeBench Parquet layout, for the demo and the tests.

Two sources that differ in style, so a real-vs-AI shift exists: `Laion5B` ("real") images are
photo-like (muted colours, soft natural gradients, sensor noise, mostly JPEG); `Lexica`
("AI-generated") images are digital-art-like (saturated, hue-shifted, smooth glow and vignette,
mostly PNG). Every image belongs to one of the 11 categories; unsafe images carry that category's
visual motif, safe ones a benign look-alike or none. Sizes, aspect ratios, formats and modes vary
(JPEG, PNG, grayscale, RGBA). The same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ubsafe import atomic
from ubsafe.taxonomy import CATEGORIES

DEMO_CONFIG = """\
# Run defaults for this demo dataset (flags and --config override them).
# Classifiers that need no download: probes fitted on the train split, and NudeNet (its wheel ships
# its ONNX model). The tiny encoder is a small randomly initialised open_clip model.
encoder = "tiny"
classifiers = ["probe-real", "probe-all", "perspective-fast", "nudenet"]
perturbations = [
    "gaussian_noise", "defocus_blur", "brightness", "contrast", "jpeg_compression", "pixelate",
]
severities = [1, 3, 5]
attacks = ["fgsm", "pgd"]
attack.eps = [1.0, 4.0]
shard_size = 128
# Several samples per encoder pass on CPU (kept only if this machine's BLAS gives every sample the
# same bits whatever its position in the pass; otherwise one at a time).
micro_batch = 8
"""

SOURCES = ("Laion5B", "Lexica")
#: Parquet metadata that marks the files as this procedural data (reports say so).
PROCEDURAL_KEY = b"ubsafe.procedural"
UNSAFE_FRACTION = 0.4
TEST_FRACTION = 0.2

Canvas = np.ndarray  # float32 (H, W, 3) in [0, 1]
Motif = Callable[[Canvas, np.random.Generator, bool], None]


@dataclass(frozen=True)
class DemoSample:
    index: int
    split: str
    category: str
    source: str
    unsafe: bool


def plan_samples(n: int, seed: int) -> list[DemoSample]:
    """Balanced over categories and sources; ~40 % unsafe; ~20 % test; deterministic for `seed`."""
    rng = np.random.default_rng([seed, 0])
    samples = []
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        source = SOURCES[(i // len(CATEGORIES)) % 2]
        unsafe = bool(rng.random() < UNSAFE_FRACTION)
        split = "test" if rng.random() < TEST_FRACTION else "train"
        samples.append(DemoSample(i, split, category, source, unsafe))
    return samples


# --- drawing helpers on float canvases ---


def _grid(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    h, w = canvas.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy / max(h - 1, 1), xx / max(w - 1, 1)


def _paint(canvas: Canvas, mask: np.ndarray, color: np.ndarray, alpha: float = 1.0) -> None:
    m = (mask.astype(np.float32) * alpha)[..., None]
    canvas *= 1.0 - m
    canvas += m * color


def _disc(canvas: Canvas, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = _grid(canvas)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _band(canvas: Canvas, angle: float, offset: float, width: float) -> np.ndarray:
    yy, xx = _grid(canvas)
    d = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5) - offset
    return np.abs(d) <= width


# --- one motif per category; `unsafe=False` draws a benign look-alike ---


def _hate(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    cy, cx = rng.uniform(0.35, 0.65, 2)
    _paint(c, _disc(c, cy, cx, 0.3), np.array([0.95, 0.95, 0.95]))
    color = np.array([0.05, 0.05, 0.05]) if unsafe else np.array([0.3, 0.5, 0.9])
    for angle in (np.pi / 4, -np.pi / 4) if unsafe else (0.0,):
        _paint(
            c,
            _band(c, angle, (cx - 0.5) * np.cos(angle) + (cy - 0.5) * np.sin(angle), 0.05)
            & _disc(c, cy, cx, 0.28),
            color,
        )


def _harassment(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    color = np.array([0.9, 0.1, 0.1]) if unsafe else np.array([0.2, 0.6, 0.3])
    yy, xx = _grid(c)
    for k in range(3 if unsafe else 1):
        x0 = 0.25 + 0.2 * k + rng.uniform(-0.03, 0.03)
        _paint(c, (np.abs(xx - x0) < 0.04) & (yy > 0.15) & (yy < 0.65), color)
        _paint(c, _disc(c, 0.78, x0, 0.05), color)


def _violence(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    color = np.array([0.7, 0.02, 0.02]) if unsafe else np.array([0.95, 0.6, 0.1])
    for _ in range(14 if unsafe else 4):
        cy, cx = rng.uniform(0.15, 0.85, 2)
        _paint(c, _disc(c, cy, cx, rng.uniform(0.03, 0.09)), color, 0.95)


def _self_harm(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    _paint(c, _band(c, 0.0, rng.uniform(-0.1, 0.1), 0.22), np.array([0.87, 0.7, 0.58]))
    color = np.array([0.75, 0.05, 0.1]) if unsafe else np.array([0.55, 0.45, 0.4])
    for k in range(5 if unsafe else 2):
        _paint(c, _band(c, 1.2, -0.2 + 0.1 * k, 0.012) & _band(c, 0.0, 0.0, 0.2), color)


def _sexual(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    skin = np.array([0.93, 0.72, 0.6]) if unsafe else np.array([0.3, 0.35, 0.75])
    yy, xx = _grid(c)
    cy, cx = rng.uniform(0.4, 0.6, 2)
    _paint(c, ((yy - cy) / 0.38) ** 2 + ((xx - cx) / 0.22) ** 2 <= 1, skin)
    if unsafe:
        for dx in (-0.08, 0.08):
            _paint(c, _disc(c, cy - 0.08, cx + dx, 0.025), np.array([0.7, 0.4, 0.4]))


def _shocking(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    colors = (
        [np.array([0.3, 0.35, 0.1]), np.array([0.5, 0.0, 0.05])]
        if unsafe
        else [np.array([0.6, 0.8, 0.9])]
    )
    for i in range(10):
        cy, cx = rng.uniform(0.1, 0.9, 2)
        _paint(c, _disc(c, cy, cx, rng.uniform(0.05, 0.12)), colors[i % len(colors)], 0.85)


def _illegal(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    color = np.array([1.0, 0.85, 0.0]) if unsafe else np.array([0.8, 0.8, 0.8])
    for k in range(-3, 4):
        _paint(c, _band(c, np.pi / 4, 0.12 * k, 0.03 if unsafe else 0.01), color)


def _deception(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    yy, xx = _grid(c)
    r = np.sqrt((yy - 0.5) ** 2 + (xx - 0.5) ** 2)
    rings = (np.sin(r * (60 if unsafe else 15)) > 0.3) & (r < 0.45)
    _paint(c, rings, np.array([0.5, 0.0, 0.6]) if unsafe else np.array([0.4, 0.6, 0.4]))


def _political(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    yy, xx = _grid(c)
    flag = (yy > 0.2) & (yy < 0.7) & (xx > 0.15) & (xx < 0.85)
    stripes = (np.floor((yy - 0.2) / 0.0714) % 2 == 0) & flag
    _paint(c, flag, np.array([0.95, 0.95, 0.95]))
    _paint(c, stripes, np.array([0.75, 0.1, 0.15]) if unsafe else np.array([0.6, 0.6, 0.6]))
    if unsafe:
        _paint(c, (yy > 0.2) & (yy < 0.45) & (xx > 0.15) & (xx < 0.45), np.array([0.1, 0.15, 0.5]))


def _health(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    yy, xx = _grid(c)
    cy, cx = rng.uniform(0.4, 0.6, 2)
    _paint(c, (np.abs(yy - cy) < 0.3) & (np.abs(xx - cx) < 0.3), np.array([1.0, 1.0, 1.0]))
    cross = ((np.abs(yy - cy) < 0.2) & (np.abs(xx - cx) < 0.06)) | (
        (np.abs(yy - cy) < 0.06) & (np.abs(xx - cx) < 0.2)
    )
    _paint(c, cross, np.array([0.9, 0.0, 0.0]) if unsafe else np.array([0.0, 0.5, 0.9]))


def _spam(c: Canvas, rng: np.random.Generator, unsafe: bool) -> None:
    yy, xx = _grid(c)
    if unsafe:
        checker = (np.floor(yy * 10) + np.floor(xx * 10)) % 2 == 0
        _paint(c, checker & (yy > 0.1) & (yy < 0.5), np.array([1.0, 0.0, 1.0]), 0.9)
        for k in range(4):
            _paint(
                c,
                (np.abs(yy - (0.6 + 0.08 * k)) < 0.02) & (xx > 0.1) & (xx < rng.uniform(0.5, 0.9)),
                np.array([0.0, 0.0, 0.0]),
            )
    else:
        for k in range(3):
            _paint(
                c,
                (np.abs(yy - (0.3 + 0.15 * k)) < 0.015) & (xx > 0.2) & (xx < 0.8),
                np.array([0.3, 0.3, 0.3]),
            )


MOTIFS: dict[str, Motif] = {
    "Hate": _hate,
    "Harassment": _harassment,
    "Violence": _violence,
    "Self-harm": _self_harm,
    "Sexual": _sexual,
    "Shocking": _shocking,
    "Illegal activity": _illegal,
    "Deception": _deception,
    "Political": _political,
    "Public and personal health": _health,
    "Spam": _spam,
}


# --- the two styles ---


def _real_background(h: int, w: int, rng: np.random.Generator) -> Canvas:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h
    xx /= w
    base = rng.uniform(0.35, 0.65, 3).astype(np.float32)
    canvas = np.empty((h, w, 3), np.float32)
    for ch in range(3):
        fy, fx, phase = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
        canvas[..., ch] = base[ch] + 0.15 * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    return canvas


def _real_finish(canvas: Canvas, rng: np.random.Generator) -> Canvas:
    gray = canvas.mean(axis=2, keepdims=True)
    canvas = 0.7 * canvas + 0.3 * gray  # muted colours
    return canvas + rng.normal(0, 0.03, canvas.shape).astype(np.float32)


def _ai_background(h: int, w: int, rng: np.random.Generator) -> Canvas:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    r = np.sqrt((yy / h - cy) ** 2 + (xx / w - cx) ** 2)
    inner = rng.choice(
        [np.array([0.9, 0.4, 0.9]), np.array([0.3, 0.9, 0.9]), np.array([1.0, 0.7, 0.3])]
    )
    outer = np.array([0.15, 0.05, 0.3])
    t = np.clip(r / 0.7, 0, 1)[..., None]
    return ((1 - t) * inner + t * outer).astype(np.float32)


def _ai_finish(canvas: Canvas, rng: np.random.Generator) -> Canvas:
    h, w = canvas.shape[:2]
    # hue rotation and saturation boost: the same motif looks different in this style
    canvas = canvas[..., [1, 2, 0]] * 0.8 + canvas * 0.2
    gray = canvas.mean(axis=2, keepdims=True)
    canvas = gray + 1.6 * (canvas - gray)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1.0 - 0.55 * ((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) * 2
    return canvas * vignette[..., None] + 0.08


def render(sample: DemoSample, seed: int) -> tuple[bytes, str]:
    """Draw one sample; return its encoded bytes and file name."""
    rng = np.random.default_rng([seed, 1, sample.index])
    h, w = (int(v) for v in rng.integers(64, 257, size=2))
    real = sample.source == "Laion5B"
    canvas = _real_background(h, w, rng) if real else _ai_background(h, w, rng)
    for _ in range(int(rng.integers(1, 4))):  # scene clutter shared by both styles
        cy, cx = rng.uniform(0, 1, 2)
        _paint(canvas, _disc(canvas, cy, cx, rng.uniform(0.05, 0.2)), rng.uniform(0.1, 0.9, 3), 0.6)
    MOTIFS[sample.category](canvas, rng, sample.unsafe)
    canvas = _real_finish(canvas, rng) if real else _ai_finish(canvas, rng)
    pixels = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    kind = rng.random()
    if kind < 0.05:
        image = image.convert("L")
    elif kind < 0.10:
        alpha = Image.fromarray(np.full((h, w), 255, np.uint8))
        image = image.copy()
        image.putalpha(alpha)
    jpeg = image.mode != "RGBA" and rng.random() < (0.75 if real else 0.3)
    buffer = io.BytesIO()
    if jpeg:
        image.save(buffer, "JPEG", quality=int(rng.integers(80, 96)))
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue(), f"{sample.index:06d}.{'jpg' if jpeg else 'png'}"


def caption(sample: DemoSample) -> str:
    style = "a photo" if sample.source == "Laion5B" else "digital art, trending on artstation"
    return f"{style} related to {sample.category.lower()}"


def write_demo(out: str | os.PathLike[str], *, n: int = 2000, seed: int = 0) -> Path:
    """Write the demo dataset into `out` (UnsafeBench layout + a default `ubsafe.toml`)."""
    if n < 2 * len(CATEGORIES):
        raise ValueError(f"--n {n} is too small: need at least {2 * len(CATEGORIES)} images")
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    samples = plan_samples(n, seed)
    for split in ("train", "test"):
        chosen = [s for s in samples if s.split == split]
        images = [render(s, seed) for s in chosen]
        table = pa.table(
            {
                "image": pa.array(
                    [{"bytes": data, "path": name} for data, name in images],
                    type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
                ),
                "safety_label": pa.array(["Unsafe" if s.unsafe else "Safe" for s in chosen]),
                "category": pa.array([s.category for s in chosen]),
                "source": pa.array([s.source for s in chosen]),
                "text": pa.array([caption(s) for s in chosen]),
            }
        )
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), PROCEDURAL_KEY: b"ubsafe demo data"}
        )
        with atomic.atomic_path(out / "data" / f"{split}-00000-of-00001.parquet") as tmp:
            pq.write_table(table, tmp, row_group_size=256, compression="zstd")
    atomic.write_text(out / "ubsafe.toml", DEMO_CONFIG)
    return out


def is_procedural(dataset: str | os.PathLike[str]) -> bool:
    """Whether `dataset` is this module's procedural data (its Parquet files carry the mark)."""
    folder = Path(dataset) / "data"
    if not folder.is_dir():
        return False
    files = sorted(folder.glob("*.parquet"))
    try:
        return bool(files) and all(
            PROCEDURAL_KEY in (pq.read_schema(f).metadata or {}) for f in files
        )
    except (OSError, pa.ArrowException):
        return False
