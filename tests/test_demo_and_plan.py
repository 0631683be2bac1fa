"""Demo data (deterministic, complete) and planning (deterministic from sample ids)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from conftest import png_bytes
from PIL import Image

from ubsafe.data.dataset import open_dataset
from ubsafe.data.demo import write_demo
from ubsafe.stages.plan import assign_shards
from ubsafe.taxonomy import CATEGORIES


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_demo_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    a = write_demo(tmp_path / "a", n=66, seed=3)
    b = write_demo(tmp_path / "b", n=66, seed=3)
    c = write_demo(tmp_path / "c", n=66, seed=4)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_demo_covers_categories_sources_labels_formats(demo_dir: Path, cli) -> None:
    ds = open_dataset(demo_dir)
    table = ds.table
    assert ds.format == "unsafebench"
    assert set(table.category) == set(CATEGORIES)
    assert set(table.source) == {"Laion5B", "Lexica"} and set(table.split) == {"train", "test"}
    assert table.groupby("label").size().to_dict().keys() == {0, 1}
    formats, modes, sizes = set(), set(), set()
    for _, data, _ in ds.iter_images(table):
        image = Image.open(io.BytesIO(data))
        formats.add(image.format)
        modes.add(image.mode)
        sizes.add(image.size)
    assert {"JPEG", "PNG"} <= formats and {"RGB", "L", "RGBA"} <= modes
    assert len(sizes) > 50
    result = cli("data", "check", demo_dir, "--images")
    assert result.exit_code == 0, result.output
    assert (
        "Public and personal health" in result.output and "all 132 images decode" in result.output
    )


def test_demo_carries_its_run_defaults(demo_dir: Path) -> None:
    from ubsafe.config import build_config

    config = build_config(dataset=demo_dir)
    assert config.encoder == "tiny" and "nudenet" in config.classifiers


def _manifest(tmp_path: Path, n: int = 40) -> pd.DataFrame:
    (tmp_path / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        (tmp_path / "img" / f"{i:03d}.png").write_bytes(png_bytes(i, (8, 8)))
        rows.append(
            {
                "path": f"img/{i:03d}.png",
                "label": i % 2,
                "category": CATEGORIES[i % 11],
                "source": "Laion5B",
                "sample_id": f"id-{(i * 7919) % 1000:04d}",
            }
        )
    return pd.DataFrame(rows)


def test_plan_is_invariant_to_row_order(tmp_path: Path) -> None:
    frame = _manifest(tmp_path)
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.sample(frac=1.0, random_state=1).to_csv(tmp_path / "b.csv", index=False)
    plan_a = assign_shards(open_dataset(tmp_path / "a.csv").table, 7)
    plan_b = assign_shards(open_dataset(tmp_path / "b.csv").table, 7)
    pd.testing.assert_frame_equal(plan_a, plan_b)
    assert plan_a.shard.max() == 5 and plan_a.groupby("shard").size().max() == 7
    assert plan_a.sample_id.is_monotonic_increasing
    assert (
        open_dataset(tmp_path / "a.csv").fingerprint()
        == open_dataset(tmp_path / "b.csv").fingerprint()
    )


def test_plan_file_records_shards_and_fingerprint(tmp_path: Path, demo_dir: Path) -> None:
    from ubsafe.stages.plan import write_plan

    ds = open_dataset(demo_dir)
    plan = assign_shards(ds.table, 50)
    write_plan(tmp_path / "plan.parquet", plan, ds, 50)
    meta = pq.read_schema(tmp_path / "plan.parquet").metadata
    assert (
        meta[b"ubsafe.n_shards"] == b"3"
        and meta[b"ubsafe.fingerprint"] == ds.fingerprint().encode()
    )
    stored = pd.read_parquet(tmp_path / "plan.parquet")
    assert list(stored.columns)[:7] == [
        "sample_id",
        "shard",
        "category",
        "source",
        "source_kind",
        "label",
        "split",
    ]
