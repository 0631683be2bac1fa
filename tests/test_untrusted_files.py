"""The pieces under the hostile-input corpus: path confinement, size limits, decode limits, the
wide-image conversion against a float64 reference, and what a skip reason may say."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ubsafe.data import images
from ubsafe.data.files import PathRefused, ReadLimits, confine, read_image_file
from ubsafe.data.images import DecodeError, decode_image


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data" / "img").mkdir(parents=True)
    (tmp_path / "data" / "img" / "a.png").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.png").write_bytes(b"y")
    (tmp_path / "data" / "out.png").symlink_to(tmp_path / "elsewhere" / "b.png")
    (tmp_path / "data" / "in.png").symlink_to(tmp_path / "data" / "img" / "a.png")
    return tmp_path


def test_paths_resolve_inside_the_dataset_or_an_allowed_root(tree: Path) -> None:
    root = tree / "data"
    assert confine(root, "img/a.png") == (root / "img" / "a.png").resolve()
    assert confine(root, "img/../img/a.png") == (root / "img" / "a.png").resolve()
    assert confine(root, "in.png") == (root / "img" / "a.png").resolve()  # a link inside: fine
    for rel, says in (
        ("../elsewhere/b.png", "climbs out of the dataset folder"),
        (str(tree / "elsewhere" / "b.png"), "is an absolute path"),
        ("out.png", "resolves through a symlink"),
    ):
        with pytest.raises(PathRefused) as err:
            confine(root, rel)
        assert says in err.value.message and "image_roots" in err.value.fix
    allowed = ReadLimits.make([tree / "elsewhere"])
    for rel in ("../elsewhere/b.png", str(tree / "elsewhere" / "b.png"), "out.png"):
        assert confine(root, rel, allowed) == (tree / "elsewhere" / "b.png").resolve()
    with pytest.raises(PathRefused):
        confine(root, "/etc/passwd", allowed)


def test_files_over_the_limit_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"\0" * 3000)
    limits = ReadLimits(max_image_bytes=2000)
    data, reason = read_image_file(path, limits)
    assert data is None and reason.startswith("too-large: the image file is 0.0 MB")
    data, reason = read_image_file(path, ReadLimits(max_image_bytes=4000))
    assert data == b"\0" * 3000 and reason == ""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_image_file(fifo, limits) == (None, "unreadable: not a regular file")


def test_a_limit_on_decoded_bytes_not_only_pixels() -> None:
    data = png(Image.new("RGB", (100, 80)))
    decode_image(data, max_decoded_bytes=100 * 80 * 4)
    with pytest.raises(DecodeError) as err:
        decode_image(data, max_decoded_bytes=100 * 80 * 4 - 1)
    assert err.value.reason == "too-large" and "100x80 in mode RGB" in err.value.detail
    grey16 = png(Image.fromarray(np.zeros((80, 100), np.uint16)))
    decode_image(grey16, max_decoded_bytes=100 * 80 * 2)


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).integers(0, 65536, (1100, 7)).astype(np.uint16),  # > 2 bands
        np.random.default_rng(1).integers(0, 256, (600, 5)).astype(np.int32),  # I, within 8 bits
        np.random.default_rng(2).integers(-500, 90_000, (600, 5)).astype(np.int32),  # I, wide
        np.random.default_rng(3).uniform(-10, 70_000, (600, 5)).astype(np.float32),  # F
    ],
    ids=["I;16", "I-narrow", "I-wide", "F"],
)
def test_wide_greyscale_matches_the_float64_formula(values: np.ndarray) -> None:
    image = Image.fromarray(values)
    array = values.astype(np.float64)
    peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
    expected = np.clip(np.rint(array * (255.0 / peak)), 0, 255).astype(np.uint8)
    rgb = np.asarray(images.to_rgb(image))
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 2], expected)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"SECRET-CONTENT plain words\n", "looks like text"),
        (b"<html><body>SECRET-CONTENT</body></html>", "looks like an HTML page"),
        (b"%PDF-1.7 SECRET-CONTENT", "looks like a PDF document"),
        (b"PK\x03\x04SECRET-CONTENT", "looks like a ZIP archive"),
        (b'{"SECRET-CONTENT": 1}', "looks like JSON"),
        (b"\xfe\xff\x00SECRET-CONTENT\xc3\x28", "binary data of an unknown kind"),
    ],
)
def test_a_skip_reason_names_the_kind_never_the_content(data: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_image(data)
    assert err.value.reason == "not-an-image" and kind in err.value.detail
    assert "SECRET" not in str(err.value)


def test_header_errors_never_quote_the_file() -> None:
    # a PPM header whose token PIL would quote in its own message
    data = b"P6\n" + b"SECRET" * 20 + b"\n"
    with pytest.raises(DecodeError) as err:
        decode_image(data)
    assert "SECRET" not in str(err.value)
