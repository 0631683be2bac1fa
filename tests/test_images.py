"""Decoding difficult images: broken ones are refused with a reason, unusual valid ones convert."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ubsafe.data.images import DecodeError, decode_image


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def gradient(w: int = 48, h: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1).astype(
        np.uint8
    )


def png_claiming(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR is rewritten to claim another size (CRC fixed)."""
    data = bytearray(encode(Image.new("RGB", (4, 4)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


BROKEN = {
    "zero bytes": (b"", "empty"),
    "text named .jpg": (b"this is not an image, just text\n", "not-an-image"),
    "corrupt JPEG": (encode(Image.fromarray(gradient()), "JPEG")[:20] + b"\x00" * 200, None),
    "truncated PNG": (encode(Image.fromarray(gradient()), "PNG")[:-60], None),
    "PNG header claims 30000x30000": (png_claiming(30000, 30000), "too-large"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_images_are_refused_with_a_reason(name: str) -> None:
    data, reason = BROKEN[name]
    with pytest.raises(DecodeError) as err:
        decode_image(data)
    assert err.value.reason in ({reason} if reason else {"corrupt", "truncated", "not-an-image"})
    assert err.value.detail


def test_truncated_png_says_truncated() -> None:
    data = encode(Image.fromarray(gradient(64, 64)), "PNG")
    with pytest.raises(DecodeError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.reason in ("truncated", "corrupt")


def test_sixteen_bit_png_keeps_its_range() -> None:
    values = (np.arange(32 * 16, dtype=np.uint16).reshape(16, 32) * 120).astype(np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = np.asarray(decode_image(data))
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert rgb.shape == (16, 32, 3)
    np.testing.assert_array_equal(
        rgb[..., 0], expected
    )  # not clipped to 255 as a plain convert would


def grey_sources() -> dict[str, bytes]:
    """Greyscale files in 8 and 16 bits, odd sizes, both codecs."""
    values = (np.arange(157 * 301, dtype=np.uint32).reshape(157, 301) * 997 % 65536).astype(
        np.uint16
    )
    eight = Image.fromarray(gradient(97, 240)[..., 0])
    return {
        "16-bit PNG": encode(Image.fromarray(values), "PNG"),
        "8-bit PNG": encode(eight, "PNG"),
        "grey JPEG": encode(eight, "JPEG", quality=90),
    }


@pytest.mark.parametrize("name", ["16-bit PNG", "8-bit PNG", "grey JPEG"])
def test_grey_sources_may_stay_one_channel(name: str) -> None:
    data = grey_sources()[name]
    grey = decode_image(data, grey=True)
    assert grey.mode == "L"
    rgb = np.asarray(decode_image(data))
    np.testing.assert_array_equal(rgb, np.repeat(np.asarray(grey)[..., None], 3, axis=-1))


def test_colour_sources_stay_rgb_when_grey_is_allowed() -> None:
    colour = encode(Image.fromarray(gradient()), "PNG")
    assert decode_image(colour, grey=True).mode == "RGB"
    palette = encode(Image.fromarray(gradient()).convert("P"), "PNG")
    assert decode_image(palette, grey=True).mode == "RGB"


def test_cmyk_jpeg_palette_rgba_gray_and_gif() -> None:
    base = Image.fromarray(gradient())
    cmyk = encode(base.convert("CMYK"), "JPEG", quality=95)
    assert (
        np.abs(np.asarray(decode_image(cmyk), dtype=int) - np.asarray(base, dtype=int)).mean() < 12
    )

    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    decoded = decode_image(encode(palette, "PNG", transparency=0))
    assert decoded.mode == "RGB" and decoded.size == base.size

    rgba = base.copy()
    rgba.putalpha(128)
    assert np.array_equal(np.asarray(decode_image(encode(rgba, "PNG"))), np.asarray(base))

    gray = decode_image(encode(base.convert("L"), "PNG"))
    assert gray.mode == "RGB" and np.array_equal(np.asarray(gray)[..., 0], np.asarray(gray)[..., 2])

    frames = [Image.new("RGB", (20, 10), color) for color in ((255, 0, 0), (0, 0, 255))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = np.asarray(decode_image(gif))
    assert first.shape == (10, 20, 3) and first[..., 0].min() > 200 and first[..., 2].max() < 50


def test_exif_orientation_is_applied() -> None:
    base = Image.fromarray(gradient(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_image(encode(base, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.size == (20, 40)
