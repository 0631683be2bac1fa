"""Decoding untrusted image bytes into RGB, or a clear reason why not.

Every stage that touches pixels goes through `decode_image`, so clean and perturbed images, the
encoders and the image-based classifiers all see the same decode: header check against a
decompression-bomb limit (pixels, and decoded bytes = pixels × bytes per pixel), full decode, EXIF
orientation applied, first frame of animations, and a conversion to 8-bit RGB that keeps 16-bit and
palette images faithful — in integer arithmetic, a band of rows at a time, so a wide image costs
little more than its decoded pixels.

A caller that resizes before it looks at channels (an encoder's input transform) may ask for
`grey=True`: a greyscale source then stays one 8-bit channel ("L"), a quarter of the memory of its
RGB copy (PIL keeps RGB at 4 bytes a pixel). Resampling treats channels alike, so converting to RGB
after the resize gives the very pixels of converting first.

A reason never quotes the file: a skip reason names the kind of problem and, for a file that is not
an image, what it looks like ("text", "a PDF document"), because reasons reach shareable outputs.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default pixel limit (width × height): 128 megapixels, well above any real photo in these sets.
MAX_PIXELS = 128 * 1024 * 1024
#: Default limit of the decoded pixels' size in memory (as PIL stores them: 1 byte per pixel for
#: L/P, 2 for 16-bit greyscale, 4 for everything else).
MAX_DECODED_BYTES = 512 * 1024 * 1024
#: Greyscale modes wider than 8 bits, converted to 8 bits by `_wide_to_8bit`.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ORIENTATION = 0x0112
#: Rows converted at once from a 16-bit or 32-bit image to 8 bits.
BAND_ROWS = 256

#: File signatures of things that are not images, for a skip reason that names the kind.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"MZ", "an executable (PE)"),
    (b"#!", "a script"),
    (b"PAR1", "a Parquet file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"SQLite format 3", "an SQLite database"),
    (b"\x80", "a Python pickle"),
    (b"-----BEGIN", "a PEM key or certificate"),
)

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


def decode_image(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
    grey: bool = False,
) -> Image.Image:
    """Decode `data` into an 8-bit RGB image, or raise `DecodeError` saying why it cannot be.

    With `grey`, a greyscale source (8, 16 or 32 bits) comes back as 8-bit "L" instead of RGB.
    """
    if not data:
        raise DecodeError("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError(
            "not-an-image", f"unrecognised signature ({content_kind(data)})"
        ) from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        MemoryError,
        Image.DecompressionBombError,
    ) as exc:
        # PIL's messages may quote header bytes: name the kind of failure only
        raise DecodeError("corrupt", f"unreadable image header ({type(exc).__name__})") from None

    width, height = image.size
    fmt = image.format or "image"
    if width <= 0 or height <= 0:
        raise DecodeError("corrupt", f"header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise DecodeError(
            "too-large",
            f"header claims {width}x{height} = {width * height:,} pixels (limit {max_pixels:,}); "
            "a decompression bomb or an unreasonably large image",
        )
    decoded_bytes = width * height * bytes_per_pixel(image.mode)
    if decoded_bytes > max_decoded_bytes:
        raise DecodeError(
            "too-large",
            f"{fmt} {width}x{height} in mode {image.mode} decodes to {decoded_bytes / 2**20:,.0f} "
            f"MiB (limit {max_decoded_bytes / 2**20:,.0f} MiB)",
        )
    try:
        image.seek(0)
        image.load()
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise DecodeError("truncated", f"truncated {fmt} file") from None
        raise DecodeError("corrupt", f"{fmt}: broken pixel data ({type(exc).__name__})") from None
    except (ValueError, SyntaxError, EOFError, MemoryError, struct.error) as exc:
        raise DecodeError("corrupt", f"{fmt}: broken pixel data ({type(exc).__name__})") from None

    # exif_transpose copies even an image it does not turn: call it only when there is a turn
    # (a broken EXIF block must not lose an otherwise good image)
    with contextlib.suppress(Exception):
        if image.getexif().get(_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image) or image
    if image.mode in WIDE_MODES:
        eight = _wide_to_8bit(image)
        del image  # the wide pixels go before the RGB copy is made
        return Image.fromarray(eight) if grey else _grey_to_rgb(eight)
    if grey and image.mode == "L":
        return image
    return to_rgb(image)


def bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of a decoded PIL image in `mode` (PIL keeps multi-band images at 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def content_kind(data: bytes) -> str:
    """What bytes that are no image look like, in words; never the bytes themselves."""
    head = data[:64]
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return f"looks like {kind}"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "looks like an HTML page"
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<"):
        return "looks like XML or HTML"
    if stripped.startswith((b"{", b"[")):
        return "looks like JSON"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown kind"
    return "looks like text"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha dropped, as the reference pipelines do)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in WIDE_MODES:
        return _grey_to_rgb(_wide_to_8bit(image))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode in ("LA", "PA"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(grey, mode="L").convert("RGB")


def _wide_to_8bit(image: Image.Image) -> np.ndarray:
    """A 16/32-bit greyscale image as uint8: round(v × 255 / peak) clipped to [0, 255], where peak
    is 65535 for 16-bit images and for wider ones holding values above 255, else 255.

    Row bands keep the intermediates small (no float64 copy of the whole image). Integer images use
    round(v / 257) = (v + 128) // 257 for v in [0, 65535] (v / 257 never lies halfway), equal to
    the float formula; float images use float64 on one band at a time.
    """
    mode = image.mode
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    bands = [(top, min(top + BAND_ROWS, height)) for top in range(0, height, BAND_ROWS)]

    def band(top: int, bottom: int) -> np.ndarray:
        return np.asarray(image.crop((0, top, width, bottom)))

    if mode == "F":
        peak = 65535.0 if any(band(t, b).max(initial=0) > 255 for t, b in bands) else 255.0
        for top, bottom in bands:
            values = band(top, bottom).astype(np.float64)
            out[top:bottom] = np.clip(np.rint(values * (255.0 / peak)), 0, 255)
        return out
    if mode.startswith("I;16"):
        # unsigned 16-bit: (v + 128) // 257 fits 32 bits, and a band needs no clipping
        for top, bottom in bands:
            values = band(top, bottom).astype(np.uint32)
            values += 128
            values //= 257
            out[top:bottom] = values
        return out
    wide = any(band(t, b).max(initial=0) > 255 for t, b in bands)
    for top, bottom in bands:
        values = band(top, bottom).astype(np.int64)
        if wide:
            np.clip(values, 0, 65535, out=values)
            values += 128
            values //= 257
        out[top:bottom] = np.clip(values, 0, 255)
    return out


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, or None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None
