"""The three dataset layouts read through one interface."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import png_bytes, simple_rows, write_unsafebench

from ubsafe.data.dataset import open_dataset
from ubsafe.data.images import decode_image


def test_unsafebench_layout_ids_labels_and_images(unsafebench_dir: Path) -> None:
    ds = open_dataset(unsafebench_dir)
    assert ds.format == "unsafebench"
    table = ds.table
    assert len(table) == 44
    # ids number each split's rows in file-name order across its Parquet files (reference numbering)
    assert sorted(table.loc[table.split == "train", "sample_id"]) == [
        f"train-{i:05d}" for i in range(30)
    ]
    assert sorted(table.loc[table.split == "test", "sample_id"]) == [
        f"test-{i:05d}" for i in range(14)
    ]
    rows = simple_rows(30, 1)
    row = table.set_index("sample_id").loc["train-00017"]
    assert row.label == (1 if rows[17]["safety_label"] == "Unsafe" else 0)
    assert row.category == rows[17]["category"]
    assert row.source_kind == ("real" if rows[17]["source"] == "Laion5B" else "ai")
    got = dict(
        (sid, data)
        for sid, data, _ in ds.iter_images(
            table[table.sample_id.isin(["train-00017", "test-00003"])]
        )
    )
    assert got["train-00017"] == rows[17]["image"]["bytes"]
    assert got["test-00003"] == simple_rows(14, 2)[3]["image"]["bytes"]


def test_external_layout_base64(tmp_path: Path) -> None:
    root = tmp_path / "SMID"
    (root / "data").mkdir(parents=True)
    images = [png_bytes(i) for i in range(6)]
    pq.write_table(
        pa.table(
            {"image": [base64.b64encode(b).decode() for b in images], "label": [0, 1, 0, 1, 1, 0]}
        ),
        root / "data" / "train-00000-of-00001.parquet",
    )
    ds = open_dataset(root)
    assert ds.format == "external"
    assert set(ds.table.category) == {"SMID"} and set(ds.table.source_kind) == {"real"}
    assert ds.table.label.tolist() == [0, 1, 0, 1, 1, 0]
    data = {sid: b for sid, b, _ in ds.iter_images(ds.table)}
    assert data["train-00004"] == images[4]
    decode_image(data["train-00004"])
    mapped = open_dataset(root, source_map={"SMID": "ai"})
    assert set(mapped.table.source_kind) == {"ai"}


def _manifest_rows(tmp_path: Path, n: int = 8) -> list[dict[str, object]]:
    (tmp_path / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        (tmp_path / "img" / f"{i}.png").write_bytes(png_bytes(i))
        rows.append(
            {
                "path": f"img/{i}.png",
                "label": i % 2,
                "category": "Violence",
                "source": "Lexica",
                "split": "train" if i < 5 else "test",
            }
        )
    return rows


def test_manifest_csv_jsonl_parquet_agree(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path)
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    pd.DataFrame(rows).to_parquet(tmp_path / "m.parquet")
    tables = [open_dataset(tmp_path / name).table for name in ("m.csv", "m.jsonl", "m.parquet")]
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0])
    assert tables[0].sample_id.tolist() == sorted(f"img/{i}.png" for i in range(8))
    assert tables[0].split.value_counts().to_dict() == {"train": 5, "test": 3}


def test_manifest_labels_as_words_and_default_split(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path, 4)
    for row in rows:
        row["label"] = "Unsafe" if row["label"] else "Safe"
        del row["split"]
        row["sample_id"] = "id-" + str(row["path"])[4]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    table = open_dataset(tmp_path / "m.csv").table
    assert table.label.tolist() == [0, 1, 0, 1]
    assert set(table.split) == {"test"}
    assert table.sample_id.tolist() == ["id-0", "id-1", "id-2", "id-3"]


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    a = write_unsafebench(tmp_path / "a", {"train": simple_rows(10, 3), "test": simple_rows(4, 4)})
    b = write_unsafebench(tmp_path / "b", {"train": simple_rows(10, 3), "test": simple_rows(4, 4)})
    rows = simple_rows(4, 4)
    rows[2]["image"] = {"bytes": png_bytes(999), "path": "x.png"}
    c = write_unsafebench(tmp_path / "c", {"train": simple_rows(10, 3), "test": rows})
    assert open_dataset(a).fingerprint() == open_dataset(b).fingerprint()
    assert open_dataset(a).fingerprint() != open_dataset(c).fingerprint()
