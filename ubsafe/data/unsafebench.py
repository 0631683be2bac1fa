"""UnsafeBench's published layout: `data/train-*.parquet`, `data/test-*.parquet`.

Columns: `image` (struct of `bytes` and `path`), `safety_label` (`Safe`/`Unsafe`), `category`,
`source` (`Laion5B`/`Lexica`), `text`. Sample ids number the rows of each split in file-name order,
`train-00042`, as the reference code numbered its image files, so published VLM responses join.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ubsafe.data.dataset import image_hash, suggest
from ubsafe.data.issues import Issue, missing_columns
from ubsafe.taxonomy import SAFETY_LABELS, SPLITS

REQUIRED = ("image", "safety_label", "category", "source")


def split_files(root: Path) -> list[tuple[str, Path]]:
    data = root / "data"
    return [(split, f) for split in SPLITS for f in sorted(data.glob(f"{split}-*.parquet"))]


def looks_like(root: Path) -> bool:
    files = split_files(root)
    if not files:
        return False
    try:
        schema = pq.read_schema(files[0][1])
    except Exception:
        return True
    return "safety_label" in schema.names or not pa.types.is_string(_type(schema, "image"))


def _type(schema: pa.Schema, name: str) -> pa.DataType:
    return schema.field(name).type if name in schema.names else pa.null()


def open_parquet(path: Path, where: str) -> tuple[pq.ParquetFile | None, list[Issue]]:
    """Open a Parquet file or say precisely why it cannot be."""
    if path.stat().st_size == 0:
        return None, [
            Issue("empty-file", where, "file is empty (0 bytes)", "re-download or remove it")
        ]
    try:
        return pq.ParquetFile(path), []
    except (pa.ArrowInvalid, OSError) as exc:
        return None, [
            Issue(
                "not-parquet",
                where,
                f"is not a readable Parquet file ({exc})",
                "re-download it; a partial download or an HTML error page often has this name",
            )
        ]


def read(root: Path) -> tuple[pd.DataFrame | None, list[Issue], list[str]]:
    files = split_files(root)
    if not files:
        return (
            None,
            [
                Issue(
                    "no-files",
                    str(root / "data"),
                    "no train-*.parquet or test-*.parquet files",
                    "point DATASET at the folder holding data/ (`ubsafe data fetch unsafebench`)",
                )
            ],
            [],
        )
    frames: list[pd.DataFrame] = []
    issues: list[Issue] = []
    next_row = dict.fromkeys(SPLITS, 0)
    for split, path in files:
        rel = path.relative_to(root).as_posix()
        pf, problems = open_parquet(path, rel)
        issues += problems
        if pf is None:
            continue
        missing = missing_columns(
            rel,
            REQUIRED,
            pf.schema_arrow.names,
            "use the UnsafeBench layout: image, safety_label, category, source, text",
        )
        if missing:
            issues.append(missing)
            continue
        frame, problems = _read_file(root, pf, rel, split, next_row[split])
        next_row[split] += pf.metadata.num_rows
        issues += problems
        frames.append(frame)
    if not frames:
        return None, issues, []
    return pd.concat(frames, ignore_index=True), issues, []


def _read_file(
    root: Path, pf: pq.ParquetFile, rel: str, split: str, first_row: int
) -> tuple[pd.DataFrame, list[Issue]]:
    issues: list[Issue] = []
    records = []
    row_in_file = 0
    for group in range(pf.num_row_groups):
        batch = pf.read_row_group(group, columns=list(REQUIRED))
        images = batch.column("image").to_pylist()
        labels = batch.column("safety_label").to_pylist()
        categories = batch.column("category").to_pylist()
        sources = batch.column("source").to_pylist()
        for image, label, category, source in zip(images, labels, categories, sources, strict=True):
            where = f"{rel}:row {row_in_file}"
            value = _label(label, where, issues)
            data, file = _image(root, image, where, issues)
            records.append(
                {
                    "sample_id": f"{split}-{first_row + row_in_file:05d}",
                    "label": value,
                    "category": "" if category is None else str(category),
                    "source": "" if source is None else str(source),
                    "split": split,
                    "file": file or rel,
                    "row": -1 if file else row_in_file,
                    "image_hash": image_hash(data) if data is not None else "",
                    "where": where,
                }
            )
            row_in_file += 1
    return pd.DataFrame.from_records(records), issues


def _label(label: object, where: str, issues: list[Issue]) -> int:
    if label is None or (isinstance(label, float) and label != label):
        issues.append(
            Issue("label", where, "safety_label is empty (null)", "label the row Safe or Unsafe")
        )
        return -1
    if not isinstance(label, str) or label not in SAFETY_LABELS:
        issues.append(
            Issue(
                "label",
                where,
                f"safety_label {label!r} is not one of Safe/Unsafe",
                suggest(str(label), tuple(SAFETY_LABELS)),
            )
        )
        return -1
    return SAFETY_LABELS[label]


def _image(
    root: Path, image: object, where: str, issues: list[Issue]
) -> tuple[bytes | None, str | None]:
    """The image's bytes (for hashing) and, when it lives in a separate file, that file's path."""
    if not isinstance(image, dict):
        issues.append(Issue("image", where, "image is empty (null)", "every row needs image bytes"))
        return None, None
    data = image.get("bytes")
    if data is not None:
        # bytes present, even empty ones: a broken image is skipped with its reason at decode time
        return bytes(data), None
    path = image.get("path")
    if path and (root / path).is_file():
        try:
            return (root / path).read_bytes(), Path(path).as_posix()
        except OSError as exc:
            issues.append(
                Issue(
                    "image", where, f"image file {path!r} is unreadable: {exc}", "fix permissions"
                )
            )
            return None, None
    detail = f"and its path {path!r} does not exist under {root}" if path else "and no path"
    issues.append(Issue("image", where, f"image has no bytes {detail}", "re-download the dataset"))
    return None, None
