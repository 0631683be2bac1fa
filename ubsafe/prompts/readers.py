"""Reading prompt files: I2P's CSV, a generic manifest, and UnsafeBench's `text` column.

Formats (`fmt`, detected when None):

- `i2p`: I2P's `i2p_benchmark.csv` (a CSV with `prompt` and `sd_seed`, or a folder holding that
  file). `categories` is I2P's comma-separated list, mapped by `taxonomy.I2P_CATEGORIES`;
  `sd_seed` → seed, `sd_guidance_scale` → guidance, `sd_image_width`/`sd_image_height` → width/
  height (ESD's copy spells the first two `evaluation_seed`/`evaluation_guidance`). I2P has no
  id column: ids are derived (`i2p-<hash>`, including `lexica_url`), never row numbers.
- `manifest`: CSV, JSONL or Parquet with `prompt` and optional `prompt_id`, `categories` (a list,
  or names separated by commas), `seed`, `guidance`, `width`, `height`, `negative_prompt`.
- `unsafebench`: the `text` column of an UnsafeBench-layout folder; ids are that reader's sample
  ids (`train-00042`), categories its `category`. Rows without text are skipped with a note.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ubsafe.data.issues import DatasetError, Issue, missing_columns
from ubsafe.prompts.promptset import COLUMNS, Kind, PromptSet, RawPrompt, build

SUFFIXES = (".csv", ".jsonl", ".parquet")
I2P_FILE = "i2p_benchmark.csv"
KINDS: tuple[Kind, ...] = ("i2p", "manifest", "unsafebench")
#: I2P column → prompt field (the second spelling is ESD's copy of the file)
I2P_COLUMNS = {
    "sd_seed": "seed",
    "evaluation_seed": "seed",
    "sd_guidance_scale": "guidance",
    "evaluation_guidance": "guidance",
    "sd_image_width": "width",
    "sd_image_height": "height",
}
#: A manifest's columns: the prompt, then the optional ones, as a prompt set has them.
MANIFEST_FIELDS = ("prompt", *(c for c in COLUMNS if c != "prompt"))
#: Builtin prompt sets, opened as `builtin:<name>`.
BUILTIN = {"demo": "demo_prompts.toml"}


def _fail(path: Path, kind: str, message: str, fix: str) -> DatasetError:
    return DatasetError(str(path), [Issue(kind, str(path), message, fix)])


def _decode(path: Path) -> tuple[str | None, list[Issue]]:
    """The file's text, or one issue per line that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    issues = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(
                Issue(
                    "not-utf8",
                    f"{path.name}:line {number}",
                    f"byte 0x{line[exc.start]:02x} at column {exc.start + 1} is not UTF-8"
                    f" (text {line[max(0, exc.start - 20) : exc.start + 20]!r})",
                    "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
                )
            )
    return None, issues


def load_rows(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str], list[Issue]]:
    """(where, row) for each row of a CSV/JSONL/Parquet file, its column names, and issues."""
    name = path.name
    if path.stat().st_size == 0:
        return [], [], [Issue("empty-file", name, "file is empty (0 bytes)", "write the prompts")]
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_rows(path)
    text, issues = _decode(path)
    if text is None:
        return [], [], issues
    if suffix == ".jsonl":
        return _jsonl_rows(name, text)
    return _csv_rows(name, text)


def _parquet_rows(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str], list[Issue]]:
    from ubsafe.data.unsafebench import open_parquet

    pf, issues = open_parquet(path, path.name)
    if pf is None:
        return [], [], issues
    rows = pf.read().to_pylist()
    result = []
    for index, row in enumerate(rows):
        where = f"{path.name}:row {index}"
        for key, value in row.items():
            if isinstance(value, bytes):
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    issues.append(
                        Issue(
                            "not-utf8",
                            where,
                            f"{key} byte 0x{value[exc.start]:02x} at {exc.start} is not UTF-8",
                            "store text columns as UTF-8 strings",
                        )
                    )
        result.append((where, row))
    return result, list(pf.schema_arrow.names), issues


def _jsonl_rows(
    name: str, text: str
) -> tuple[list[tuple[str, dict[str, Any]]], list[str], list[Issue]]:
    rows: list[tuple[str, dict[str, Any]]] = []
    issues: list[Issue] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            issues.append(
                Issue(
                    "not-json",
                    where,
                    f"is not valid JSON ({exc.msg} at column {exc.colno}: {line[:40]!r})",
                    "write one JSON object per line",
                )
            )
            continue
        if not isinstance(value, dict):
            issues.append(
                Issue(
                    "not-json",
                    where,
                    f"is a JSON {type(value).__name__}, not an object",
                    'write one object per line, e.g. {"prompt": "..."}',
                )
            )
            continue
        columns.update(dict.fromkeys(value))
        rows.append((where, value))
    return rows, list(columns), issues


def _csv_rows(
    name: str, text: str
) -> tuple[list[tuple[str, dict[str, Any]]], list[str], list[Issue]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        columns = list(reader.fieldnames or [])
        start = reader.line_num + 1
        for row in reader:
            rows.append((f"{name}:line {start}", row))
            start = reader.line_num + 1
    except csv.Error as exc:
        return (
            [],
            [],
            [
                Issue(
                    "not-csv",
                    f"{name}:line {reader.line_num}",
                    f"is not valid CSV ({exc})",
                    "quote fields that hold commas or newlines",
                )
            ],
        )
    return rows, columns, []


def _table(
    path: Path, fix: str, *, required: tuple[str, ...] = ("prompt",)
) -> list[tuple[str, dict[str, Any]]]:
    rows, columns, issues = load_rows(path)
    if issues:
        raise DatasetError(str(path), issues)
    missing = missing_columns(path.name, required, columns, fix)
    if missing:
        raise DatasetError(str(path), [missing])
    return rows


def read_i2p(path: Path) -> PromptSet:
    rows = _table(path, "I2P's CSV has prompt, categories, sd_seed, ... (`ubsafe data fetch i2p`)")
    raws = []
    for where, row in rows:
        fields: dict[str, Any] = {}
        for column, name in I2P_COLUMNS.items():
            if column in row and name not in fields:
                fields[name] = row[column]
        raws.append(
            RawPrompt(
                where=where,
                prompt=row.get("prompt"),
                categories=row.get("categories"),
                id_extra=(row.get("lexica_url") or "",),
                **fields,
            )
        )
    return build(raws, kind="i2p", source=path, id_prefix="i2p")


def read_manifest(path: Path) -> PromptSet:
    rows = _table(
        path,
        "a prompt manifest needs a `prompt` column (optional: "
        + ", ".join(MANIFEST_FIELDS[1:])
        + ")",
    )
    raws = [
        RawPrompt(
            where=where,
            prompt=row.get("prompt"),
            prompt_id=row.get("prompt_id"),
            categories=row.get("categories"),
            seed=row.get("seed"),
            guidance=row.get("guidance"),
            width=row.get("width"),
            height=row.get("height"),
            negative_prompt=row.get("negative_prompt"),
        )
        for where, row in rows
    ]
    prompt_set = build(raws, kind="manifest", source=path, id_prefix="p")
    extra = sorted({k for _, row in rows for k in row} - set(MANIFEST_FIELDS))
    if extra:
        return replace(prompt_set, notes=(f"columns not used: {', '.join(extra)}",))
    return prompt_set


def read_unsafebench(root: Path) -> PromptSet:
    """The `text` column, numbered exactly as `ubsafe.data.unsafebench` numbers its samples."""
    from ubsafe.data.unsafebench import open_parquet, split_files
    from ubsafe.taxonomy import SPLITS

    files = split_files(root)
    if not files:
        raise _fail(
            root / "data",
            "no-files",
            "no train-*.parquet or test-*.parquet files",
            "point PROMPTS at the folder holding data/ (`ubsafe data fetch unsafebench`)",
        )
    raws: list[RawPrompt] = []
    issues: list[Issue] = []
    skipped = 0
    next_row = dict.fromkeys(SPLITS, 0)
    for split, path in files:
        rel = path.relative_to(root).as_posix()
        pf, problems = open_parquet(path, rel)
        issues += problems
        if pf is None:
            continue
        first = next_row[split]
        next_row[split] += pf.metadata.num_rows
        missing = missing_columns(
            rel,
            ("text", "category"),
            pf.schema_arrow.names,
            "UnsafeBench's layout has text, category",
        )
        if missing:
            issues.append(missing)
            continue
        table = pf.read(columns=["text", "category"])
        for index, (text, category) in enumerate(
            zip(table.column("text").to_pylist(), table.column("category").to_pylist(), strict=True)
        ):
            if text is None or not str(text).strip():
                skipped += 1
                continue
            raws.append(
                RawPrompt(
                    where=f"{rel}:row {index}",
                    prompt=text,
                    prompt_id=f"{split}-{first + index:05d}",
                    categories=[category] if category else [],
                )
            )
    if issues:
        raise DatasetError(str(root), issues)
    prompt_set = build(raws, kind="unsafebench", source=root, id_prefix="ub")
    if skipped:
        return replace(prompt_set, notes=(f"{skipped} row(s) without text skipped",))
    return prompt_set


READERS = {"i2p": read_i2p, "manifest": read_manifest, "unsafebench": read_unsafebench}


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
            return next(csv.reader(handle), [])
    except (csv.Error, OSError):
        return []


def detect(path: Path) -> tuple[Kind, Path]:
    """The format of `path` and the file (or folder) to read."""
    if path.is_dir():
        if (path / I2P_FILE).is_file():
            return "i2p", path / I2P_FILE
        from ubsafe.data import unsafebench

        if unsafebench.looks_like(path):
            return "unsafebench", path
        raise _fail(
            path,
            "format",
            f"no prompt layout recognised: expected {I2P_FILE} or data/train-*.parquet"
            " (UnsafeBench)",
            "point PROMPTS at a prompt file (.csv, .jsonl, .parquet) or such a folder",
        )
    if not path.exists():
        raise _fail(path, "missing", "does not exist", "check the PROMPTS path")
    if path.suffix.lower() not in SUFFIXES:
        raise _fail(
            path,
            "format",
            f"a file with suffix {path.suffix!r} is not a prompt file",
            "use .csv, .jsonl or .parquet",
        )
    if path.suffix.lower() == ".csv" and set(_csv_header(path)) & set(I2P_COLUMNS):
        return "i2p", path
    return "manifest", path


def looks_like_prompts(path: Path) -> bool:
    """True for a folder with I2P's CSV and for a table with a `prompt` but no image `path`."""
    if str(path).startswith("builtin:"):
        return True
    if path.is_dir():
        return (path / I2P_FILE).is_file()
    if not path.is_file() or path.suffix.lower() not in SUFFIXES or path.stat().st_size == 0:
        return False
    suffix = path.suffix.lower()
    columns: list[str] = []
    if suffix == ".csv":
        columns = _csv_header(path)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            columns = list(pq.read_schema(path).names)
        except Exception:
            return False
    else:
        with path.open("rb") as handle:
            first = handle.readline().decode("utf-8", errors="replace")
        try:
            value = json.loads(first)
        except json.JSONDecodeError:
            return '"prompt"' in first
        columns = list(value) if isinstance(value, dict) else []
    return "prompt" in columns and "path" not in columns


def open_prompts(path: str | os.PathLike[str], *, fmt: str | None = None) -> PromptSet:
    """Read and check a prompt set; raise `DatasetError` listing every problem, before any job.

    `path` is a file, a folder, or `builtin:<name>` for a prompt set shipped with ubsafe; `fmt`
    (`i2p`, `manifest`, `unsafebench`; None or `auto` = detected) overrides the detection.
    """
    if str(path).startswith("builtin:"):
        from ubsafe.prompts.demo import builtin_prompts

        return builtin_prompts(str(path).removeprefix("builtin:"))
    path = Path(path)
    fmt = None if fmt == "auto" else fmt
    if fmt is not None and fmt not in READERS:
        raise _fail(
            path, "format", f"unknown prompt format {fmt!r}", f"use one of: {', '.join(READERS)}"
        )
    kind, target = detect(path) if fmt is None else (fmt, path)
    if kind == "i2p" and target.is_dir():
        target = target / I2P_FILE
    if kind != "unsafebench" and not target.is_file():
        raise _fail(target, "missing", "is not a file", "check the PROMPTS path")
    return READERS[kind](target)
