"""Heavily blurred thumbnails of generated images (`ubsafe report --thumbnails blur`).

A report about unsafe content must be safe to open, so generated images never enter it as they
are: each is shrunk to `GRID` × `GRID` pixels (a box average), enlarged again and blurred with a
wide Gaussian, which leaves colours and rough layout and nothing recognisable. They are read from
the run's generate shards (`shards/generate/shard-NNNNN.parquet`, column `image`: PNG bytes), the
first `PER_GENERATOR` images of each generator in sample-id order.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

#: Pixels per side an image is reduced to before it is enlarged again.
GRID = 8
#: Side of a thumbnail in the figure, pixels.
SIDE = 96
#: Gaussian blur radius applied after enlarging, pixels.
BLUR_RADIUS = 8
PER_GENERATOR = 4


def blur(image: Any) -> Any:
    """The heavily blurred thumbnail of a PIL image (RGB, SIDE × SIDE)."""
    from PIL import Image, ImageFilter

    small = image.convert("RGB").resize((GRID, GRID), Image.Resampling.BOX)
    large = small.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return large.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))


def generated_images(root: Path, per_generator: int = PER_GENERATOR) -> dict[str, list[Any]]:
    """The first `per_generator` images per generator (sample-id order) from the generate shards,
    decoded; shards that cannot be read are passed over."""
    import pyarrow.parquet as pq
    from PIL import Image

    shards = sorted((root / "shards" / "generate").glob("shard-*.parquet"))
    chosen: dict[str, list[tuple[str, bytes]]] = {}
    for path in shards:
        try:
            table = pq.read_table(path, columns=["sample_id", "generator", "image"])
        except (OSError, ValueError, KeyError):
            continue
        frame = table.to_pandas()
        for sample_id, generator, image in sorted(
            zip(frame["sample_id"], frame["generator"], frame["image"], strict=True)
        ):
            data = image.get("bytes") if isinstance(image, dict) else None
            if data:
                chosen.setdefault(str(generator), []).append((str(sample_id), bytes(data)))
    out: dict[str, list[Any]] = {}
    for generator, items in sorted(chosen.items()):
        for _, data in sorted(items)[:per_generator]:
            try:
                image = Image.open(io.BytesIO(data))
                image.load()
            except OSError:
                continue
            out.setdefault(generator, []).append(image)
    return out


def blurred_thumbnails(root: Path, per_generator: int = PER_GENERATOR) -> Any:
    """A figure (`Png`) of blurred thumbnails, one row per generator; None without images."""
    from ubsafe.report.figures import _figure, to_png

    images = generated_images(root, per_generator)
    if not images:
        return None
    rows = list(images)
    cols = max(len(v) for v in images.values())
    fig = _figure(1.2 * cols + 1.4, 1.25 * len(rows))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, generator in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images[generator]):
                ax.imshow(np.asarray(blur(images[generator][c])), interpolation="bilinear")
            else:
                ax.set_visible(False)
        axes[r, 0].set_ylabel(generator, fontsize=8)
    return to_png(fig)
