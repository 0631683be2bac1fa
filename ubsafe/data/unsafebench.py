"""UnsafeBench's published layout: `data/train-*.parquet`, `data/test-*.parquet`.

Columns: `image` (struct of `bytes` and `path`), `safety_label` (`Safe`/`Unsafe`), `category`,
`source` (`Laion5B`/`Lexica`), `text`. Sample ids number the rows of each split in file-name order,
`train-00042`, as the reference code numbered its image files, so published VLM responses join.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ubsafe.data.dataset import image_hash, suggest
from ubsafe.data.files import (
    DEFAULT_LIMITS,
    PathRefused,
    ReadLimits,
    confine,
    oversize_hash,
    read_image_file,
)
from ubsafe.data.issues import Issue, missing_columns
from ubsafe.taxonomy import NO_LABEL, SAFETY_LABELS, SPLITS

REQUIRED = ("image", "category", "source")
#: Optional: without it the dataset is unlabelled (every label NO_LABEL).
LABEL_COLUMN = "safety_label"


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


def read(
    root: Path, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[pd.DataFrame | None, list[Issue], list[str]]:
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
    files_read: list[str] = []
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
            "use the UnsafeBench layout: image, safety_label (optional), category, source, text",
        )
        if missing:
            issues.append(missing)
            continue
        frame, problems = _read_file(root, pf, rel, split, next_row[split], limits)
        files_read.append(rel)
        next_row[split] += pf.metadata.num_rows
        issues += problems
        frames.append(frame)
    if not frames:
        return None, issues, []
    labelled = {name: LABEL_COLUMN in pq.read_schema(root / name).names for name in files_read}
    if len(set(labelled.values())) > 1:
        issues.append(
            Issue(
                "label",
                ", ".join(name for name, has in labelled.items() if not has),
                f"no {LABEL_COLUMN} column, while "
                + ", ".join(name for name, has in labelled.items() if has)
                + " have one",
                f"label every file (a {LABEL_COLUMN} column) or none (an unlabelled dataset)",
            )
        )
    return pd.concat(frames, ignore_index=True), issues, []


def _read_file(
    root: Path, pf: pq.ParquetFile, rel: str, split: str, first_row: int, limits: ReadLimits
) -> tuple[pd.DataFrame, list[Issue]]:
    issues: list[Issue] = []
    records = []
    row_in_file = 0
    for group in range(pf.num_row_groups):
        labelled = LABEL_COLUMN in pf.schema_arrow.names
        batch = pf.read_row_group(group, columns=[*REQUIRED, *([LABEL_COLUMN] * labelled)])
        images = image_values(batch.column("image"), limits)
        labels = batch.column(LABEL_COLUMN).to_pylist() if labelled else [None] * len(images)
        categories = batch.column("category").to_pylist()
        sources = batch.column("source").to_pylist()
        for image, label, category, source in zip(images, labels, categories, sources, strict=True):
            where = f"{rel}:row {row_in_file}"
            value = _label(label, where, issues) if labelled else NO_LABEL
            data, file = _image(root, image, where, issues, limits)
            records.append(
                {
                    "sample_id": f"{split}-{first_row + row_in_file:05d}",
                    "label": value,
                    "category": "" if category is None else str(category),
                    "source": "" if source is None else str(source),
                    "split": split,
                    "file": file or rel,
                    "row": -1 if file else row_in_file,
                    "image_hash": data if isinstance(data, str) else _hash(data),
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


def image_values(column: pa.ChunkedArray | pa.Array, limits: ReadLimits) -> list[object]:
    """The `image` structs of a row group as dicts; embedded bytes over the size limit are not
    copied out of Arrow: such a row becomes {"too_large": n_bytes}."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_struct(array.type):
        return [None] * len(array)
    names = [array.type.field(i).name for i in range(array.type.num_fields)]
    data = array.field("bytes") if "bytes" in names else pa.nulls(len(array), pa.binary())
    paths = array.field("path") if "path" in names else pa.nulls(len(array), pa.string())
    lengths = pc.binary_length(data).to_pylist() if len(array) else []
    values: list[object] = []
    for i, length in enumerate(lengths):
        if not array[i].is_valid:
            values.append(None)
        elif length is not None and length > limits.max_image_bytes:
            values.append({"too_large": int(length)})
        else:
            values.append({"bytes": data[i].as_py(), "path": paths[i].as_py()})
    return values


def _hash(data: bytes | None) -> str:
    return image_hash(data) if data is not None else ""


def _image(
    root: Path, image: object, where: str, issues: list[Issue], limits: ReadLimits
) -> tuple[bytes | str | None, str | None]:
    """The image's bytes (for hashing; the stand-in hash of one too large to read) and, when it
    lives in a separate file, that file's path."""
    if not isinstance(image, dict):
        issues.append(Issue("image", where, "image is empty (null)", "every row needs image bytes"))
        return None, None
    if "too_large" in image:
        return oversize_hash(int(image["too_large"])), None
    data = image.get("bytes")
    if data is not None:
        # bytes present, even empty ones: a broken image is skipped with its reason at decode time
        return bytes(data), None
    path = image.get("path")
    if path:
        try:
            file = confine(root, str(path), limits)
        except PathRefused as exc:
            issues.append(Issue("image-outside", where, exc.message, exc.fix))
            return None, None
        if file.is_file():
            size = file.stat().st_size
            if limits.too_large(size):
                return oversize_hash(size), Path(path).as_posix()
            read, reason = read_image_file(file, limits)
            if read is None:
                issues.append(
                    Issue("image", where, f"image file {path!r}: {reason}", "fix permissions")
                )
                return None, None
            return read, Path(path).as_posix()
    detail = f"and its path {path!r} does not exist under {root}" if path else "and no path"
    issues.append(Issue("image", where, f"image has no bytes {detail}", "re-download the dataset"))
    return None, None
