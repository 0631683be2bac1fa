"""Shared fixtures: small datasets in the real layouts, and a CLI runner."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from PIL import Image

os.environ.setdefault("UBSAFE_PROGRESS", "0")
# The tests build small weight files under the real repositories' names: their pinned checksums
# cannot match (tests/test_weights_pins.py switches the check back on where it is the subject).
os.environ.setdefault("UBSAFE_VERIFY_WEIGHTS", "0")


def png_bytes(seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_unsafebench(
    root: Path, splits: dict[str, list[dict[str, Any]]], *, files_per_split: int = 1
) -> Path:
    """Write rows in UnsafeBench's published Parquet layout (data/<split>-*.parquet)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        chunks = np.array_split(np.arange(len(rows)), files_per_split)
        for i, chunk in enumerate(chunks):
            part = [rows[j] for j in chunk]
            table = pa.table(
                {
                    "image": pa.array(
                        [
                            r.get("image", {"bytes": png_bytes(k), "path": f"{k}.png"})
                            for k, r in zip(chunk, part, strict=True)
                        ],
                        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
                    ),
                    "safety_label": pa.array(
                        [r.get("safety_label") for r in part], type=pa.string()
                    ),
                    "category": pa.array([r.get("category") for r in part], type=pa.string()),
                    "source": pa.array([r.get("source") for r in part], type=pa.string()),
                    "text": pa.array([r.get("text", "") for r in part], type=pa.string()),
                }
            )
            pq.write_table(
                table, root / "data" / f"{split}-{i:05d}-of-{files_per_split:05d}.parquet"
            )
    return root


def simple_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    from ubsafe.taxonomy import CATEGORIES

    rng = np.random.default_rng(seed)
    return [
        {
            "safety_label": "Unsafe" if rng.random() < 0.4 else "Safe",
            "category": CATEGORIES[i % len(CATEGORIES)],
            "source": ("Laion5B", "Lexica")[i % 2],
            "image": {"bytes": png_bytes(seed * 1000 + i), "path": f"{i}.png"},
        }
        for i in range(n)
    ]


@pytest.fixture
def unsafebench_dir(tmp_path: Path) -> Path:
    return write_unsafebench(
        tmp_path / "ub",
        {"train": simple_rows(30, 1), "test": simple_rows(14, 2)},
        files_per_split=2,
    )


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ubsafe.data.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("demo") / "data", n=132, seed=7)


@pytest.fixture(scope="module")
def browser() -> Any:
    """Headless Chromium at the report's reference viewport (`browser.WIDTH` × `browser.HEIGHT`);
    the test is skipped where Chromium is not installed."""
    from browser import HEIGHT, WIDTH, Chromium, chromium_path

    path = chromium_path()
    if path is None:
        pytest.skip(
            "headless Chromium is not installed; `bash env/system-packages.sh` (root) installs it"
        )
    with Chromium(path, width=WIDTH, height=HEIGHT) as chromium:
        yield chromium


@pytest.fixture
def cli() -> Any:
    from ubsafe.cli import main

    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke
