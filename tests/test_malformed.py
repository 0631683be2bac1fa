"""Malformed datasets: each gets its own message (where, value, fix); nothing is planned."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import png_bytes, simple_rows, write_unsafebench


def ub(
    rows_update: Callable[[list[dict]], None] | None = None, *, drop: str | None = None
) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        rows = simple_rows(12, 5)
        if rows_update:
            rows_update(rows)
        root = write_unsafebench(tmp / "ub", {"train": rows, "test": simple_rows(4, 6)})
        if drop:
            path = root / "data" / "train-00000-of-00001.parquet"
            pq.write_table(pq.read_table(path).drop_columns([drop]), path)
        return root

    return build


def setter(index: int, key: str, value: object) -> Callable[[list[dict]], None]:
    def update(rows: list[dict]) -> None:
        rows[index][key] = value

    return update


def manifest(
    update: Callable[[list[dict]], None] | None = None, *, suffix: str = ".csv"
) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / "img").mkdir()
        rows = []
        for i in range(6):
            (tmp / "img" / f"{i}.png").write_bytes(png_bytes(i))
            rows.append(
                {
                    "path": f"img/{i}.png",
                    "label": i % 2,
                    "category": "Hate",
                    "source": "Laion5B",
                    "split": "test",
                    "sample_id": f"s{i}",
                }
            )
        if update:
            update(rows)
        path = tmp / f"manifest{suffix}"
        frame = pd.DataFrame(rows)
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        return path

    return build


def file_named_parquet(content: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        root = ub()(tmp)
        (root / "data" / "test-00000-of-00001.parquet").write_bytes(content)
        return root

    return build


def empty_parquet(tmp: Path) -> Path:
    root = tmp / "ub"
    (root / "data").mkdir(parents=True)
    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("safety_label", pa.string()),
            ("category", pa.string()),
            ("source", pa.string()),
        ]
    )
    pq.write_table(schema.empty_table(), root / "data" / "train-00000-of-00001.parquet")
    return root


def bad_base64(tmp: Path) -> Path:
    root = tmp / "SMID"
    (root / "data").mkdir(parents=True)
    images = [
        base64.b64encode(png_bytes(0)).decode(),
        "not base64 at all!!",
        base64.b64encode(png_bytes(1)).decode(),
    ]
    pq.write_table(
        pa.table({"image": images, "label": [0, 1, 0]}), root / "data" / "test-00000.parquet"
    )
    return root


def bad_jsonl(tmp: Path) -> Path:
    path = manifest(suffix=".jsonl")(tmp)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][:-3]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def no_layout(tmp: Path) -> Path:
    (tmp / "stuff").mkdir()
    (tmp / "stuff" / "notes.txt").write_text("hello", encoding="utf-8")
    return tmp / "stuff"


CORPUS: list[tuple[str, Callable[[Path], Path], list[str]]] = [
    (
        "missing column",
        ub(drop="category"),
        ["missing column(s) category", "train-00000-of-00001.parquet"],
    ),
    (
        "label with a space",
        ub(setter(3, "safety_label", "unsafe ")),
        [
            "row 3",
            "safety_label 'unsafe ' is not one of Safe/Unsafe",
            "strip the spaces and use the exact spelling 'Unsafe'",
        ],
    ),
    (
        "unknown category",
        ub(setter(2, "category", "Nudity")),
        ["row 2", "category 'Nudity' is not an UnsafeBench category"],
    ),
    (
        "category in the wrong case",
        ub(setter(4, "category", "sexual")),
        ["row 4", "use the exact spelling 'Sexual'"],
    ),
    ("null label", ub(setter(5, "safety_label", None)), ["row 5", "safety_label is empty (null)"]),
    (
        "unknown source",
        ub(setter(1, "source", "Midjourney")),
        ["row 1", "source 'Midjourney' is not mapped to real/ai", "[source_map]"],
    ),
    (
        "image without bytes or file",
        ub(setter(6, "image", {"bytes": None, "path": "gone.png"})),
        ["row 6", "image has no bytes and its path 'gone.png' does not exist"],
    ),
    (
        "empty file",
        file_named_parquet(b""),
        ["test-00000-of-00001.parquet", "file is empty (0 bytes)"],
    ),
    (
        "not a Parquet file",
        file_named_parquet(b"<html>Rate limited</html>"),
        ["test-00000-of-00001.parquet", "is not a readable Parquet file", "partial download"],
    ),
    ("no rows", empty_parquet, ["contains no samples"]),
    (
        "duplicate id",
        manifest(setter(4, "sample_id", "s1")),
        ["sample_id 's1' appears 2 times", "line 3", "line 6"],
    ),
    (
        "missing image path",
        manifest(setter(2, "path", "img/nope.png")),
        ["line 4", "image 'img/nope.png' does not exist"],
    ),
    (
        "label out of range",
        manifest(setter(1, "label", 2)),
        ["line 3", "label '2' is not one of 0/1/Safe/Unsafe"],
    ),
    ("NaN label", manifest(setter(0, "label", None)), ["line 2", "label is empty (NaN)"]),
    (
        "unknown split",
        manifest(setter(0, "split", "validation")),
        ["line 2", "split 'validation' is not train/test"],
    ),
    (
        "manifest missing a column",
        manifest(lambda rows: [r.pop("category") for r in rows]),
        ["missing column(s) category", "a manifest needs path, category, source"],
    ),
    ("broken JSONL line", bad_jsonl, ["manifest.jsonl:line 2", "is not valid JSON"]),
    ("invalid base64 image", bad_base64, ["row 1", "image is not valid base64"]),
    ("no recognisable layout", no_layout, ["no dataset layout recognised"]),
    (
        "path does not exist",
        lambda tmp: tmp / "nowhere",
        ["does not exist", "check the DATASET path"],
    ),
]


@pytest.mark.parametrize("name,build,expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_data_check_refuses_with_a_specific_message(
    tmp_path: Path, cli, name, build, expected
) -> None:
    dataset = build(tmp_path)
    result = cli("data", "check", dataset)
    assert result.exit_code == 1, result.output
    for fragment in expected:
        assert fragment in result.output, f"{name}: {fragment!r} not in:\n{result.output}"


def test_messages_are_distinct() -> None:
    messages = [" ".join(expected) for _, _, expected in CORPUS]
    assert len(set(messages)) == len(messages) >= 12


@pytest.mark.parametrize("name,build,expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_nothing_is_planned(tmp_path: Path, cli, name, build, expected) -> None:
    dataset = build(tmp_path)
    out = tmp_path / "run"
    result = cli("plan", dataset, "--out", out, "--classifiers", "probe-all", "--encoder", "tiny")
    assert result.exit_code != 0
    assert expected[0] in result.output
    assert not (out / "plan.parquet").exists()
    assert not (out / "run.toml").exists()
