"""Decoding untrusted image bytes into RGB, or a clear reason why not.

Every stage that touches pixels goes through `decode_image`, so clean and perturbed images, the
encoders and the image-based classifiers all see the same decode: header check against a
decompression-bomb limit, full decode, EXIF orientation applied, first frame of animations, and a
conversion to 8-bit RGB that keeps 16-bit and palette images faithful.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default pixel limit (width × height): 128 megapixels, well above any real photo in these sets.
MAX_PIXELS = 128 * 1024 * 1024

# `decode_image` checks the header's size itself, against `max_pixels`, before any pixel is decoded;
# PIL's own process-wide check would refuse earlier with a message that omits the dimensions.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class DecodeError(Exception):
    """An image that cannot be used; `reason` is a short code for skipped.csv, `detail` the why."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `data` into an 8-bit RGB image, or raise `DecodeError` saying why it cannot be."""
    if not data:
        raise DecodeError("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DecodeError("too-large", str(exc)) from None
    except UnidentifiedImageError:
        head = data[:16]
        raise DecodeError("not-an-image", f"unrecognised format (first bytes {head!r})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DecodeError("corrupt", f"{type(exc).__name__}: {exc}") from None

    width, height = image.size
    if width <= 0 or height <= 0:
        raise DecodeError("corrupt", f"header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise DecodeError(
            "too-large",
            f"header claims {width}x{height} = {width * height:,} pixels (limit {max_pixels:,}); "
            "a decompression bomb or an unreasonably large image",
        )
    try:
        image.seek(0)
        image.load()
    except OSError as exc:
        message = str(exc)
        reason = "truncated" if "truncated" in message.lower() else "corrupt"
        raise DecodeError(reason, f"{image.format or 'image'}: {message}") from None
    except (ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise DecodeError(
            "corrupt", f"{image.format or 'image'}: {type(exc).__name__}: {exc}"
        ) from None

    oriented: Image.Image = image
    # a broken EXIF block must not lose an otherwise good image
    with contextlib.suppress(Exception):
        oriented = ImageOps.exif_transpose(image) or image
    return to_rgb(oriented)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha dropped, as the reference pipelines do)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        array = np.clip(np.rint(array * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode in ("LA", "PA"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, or None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None
