"""The prompt table every reader produces, its checks, ids and default seeds.

`PromptSet.frame` has one row per prompt, sorted by `prompt_id`:

    prompt_id        str, unique; from the file, or derived from the generation inputs (below)
    prompt           str, never empty
    categories       list[str] of ubsafe category names (may be empty)
    seed             int64 within uint32; from the file, or `default_seed(prompt_id)`
    guidance         float64, NaN = the generator's default
    width, height    Int64 (positive multiples of 8), NA = the generator's default
    negative_prompt  str or None

Derived ids are `<prefix>-<16 hex>`: BLAKE2b-64 of the fields that decide the image (prompt,
negative prompt, seed, guidance, width, height as written in the file; I2P adds `lexica_url`), so
an id never depends on a row's position and survives reordering, filtering and concatenation.
The default seed is the first 4 bytes (little-endian) of BLAKE2b over
`ubsafe.prompt-seed` + the prompt id: the same prompt id always gets the same seed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ubsafe.data.dataset import suggest
from ubsafe.data.issues import DatasetError, Issue
from ubsafe.taxonomy import CATEGORIES, I2P_CATEGORIES

Kind = Literal["i2p", "manifest", "unsafebench"]
COLUMNS = (
    "prompt_id",
    "prompt",
    "categories",
    "seed",
    "guidance",
    "width",
    "height",
    "negative_prompt",
)
UINT32_MAX = 2**32 - 1
#: Category spellings accepted in prompt files: ubsafe's names and I2P's (mapped by the table).
CATEGORY_NAMES: dict[str, str] = {**{c: c for c in CATEGORIES}, **I2P_CATEGORIES}


@dataclass(frozen=True)
class PromptSet:
    """A validated prompt set (see the module docstring for `frame`)."""

    frame: pd.DataFrame
    kind: Kind
    fingerprint: str
    source: Path
    notes: tuple[str, ...] = field(default=())
    #: how many rows gave their own seed / prompt_id (the rest are derived)
    seeds_given: int = 0
    ids_given: int = 0

    def __len__(self) -> int:
        return len(self.frame)


def default_seed(prompt_id: str) -> int:
    """The seed of a prompt whose file gives none: a uint32 of its id alone."""
    digest = hashlib.blake2b(b"ubsafe.prompt-seed\x1f" + prompt_id.encode("utf-8"), digest_size=4)
    return int.from_bytes(digest.digest(), "little")


def derived_id(prefix: str, parts: Iterable[object]) -> str:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return f"{prefix}-{hashlib.blake2b(text.encode('utf-8'), digest_size=8).hexdigest()}"


@dataclass
class RawPrompt:
    """One row as read: `where` is file:line (or row); values not yet checked."""

    where: str
    prompt: Any
    prompt_id: Any = None
    categories: Any = None
    seed: Any = None
    guidance: Any = None
    width: Any = None
    height: Any = None
    negative_prompt: Any = None
    id_extra: tuple[object, ...] = ()


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if value is pd.NA:
        return True
    return isinstance(value, str) and not value.strip()


def _integer(value: object) -> int | None:
    """An integer from an int, an integral float or a decimal string; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _integer(value.item())
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8")  # callers checked decoding already
    return value if isinstance(value, str) else None


def category_list(value: object) -> list[str]:
    """Category names as written: a comma-separated string or a list."""
    if _missing(value):
        return []
    if isinstance(value, str):
        items: Sequence[object] = value.split(",")
    elif hasattr(value, "tolist"):
        items = value.tolist()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        items = [value]
    return [str(item).strip() for item in items if not _missing(item)]


class _Checker:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(self, kind: str, where: str, message: str, fix: str) -> None:
        self.issues.append(Issue(kind, where, message, fix))

    def prompt(self, raw: RawPrompt) -> str:
        text = _text(raw.prompt)
        if text is None and not _missing(raw.prompt):
            text = str(raw.prompt)
        if text is None or not text.strip():
            self.add(
                "empty-prompt",
                raw.where,
                f"prompt is empty ({raw.prompt!r})",
                "write the prompt text or drop the row",
            )
            return ""
        return text

    def categories(self, raw: RawPrompt) -> list[str]:
        names = []
        for name in category_list(raw.categories):
            if name in CATEGORY_NAMES:
                names.append(CATEGORY_NAMES[name])
                continue
            self.add(
                "category",
                raw.where,
                f"category {name!r} is neither an ubsafe nor an I2P category",
                suggest(name, tuple(CATEGORY_NAMES)),
            )
        return sorted(set(names), key=CATEGORIES.index)

    def seed(self, raw: RawPrompt) -> int | None:
        if _missing(raw.seed):
            return None
        value = _integer(raw.seed)
        if value is None:
            self.add(
                "seed",
                raw.where,
                f"seed {raw.seed!r} is not an integer",
                f"write a whole number in 0..{UINT32_MAX}, or leave it empty for the default",
            )
            return None
        if not 0 <= value <= UINT32_MAX:
            self.add(
                "seed-range",
                raw.where,
                f"seed {value} is outside uint32 (0..{UINT32_MAX})",
                f"use a seed in 0..{UINT32_MAX} (e.g. seed % 2**32)",
            )
            return None
        return value

    def guidance(self, raw: RawPrompt) -> float:
        if _missing(raw.guidance):
            return math.nan
        value = _number(raw.guidance)
        if value is None:
            self.add(
                "guidance",
                raw.where,
                f"guidance {raw.guidance!r} is not a finite number",
                "write a number such as 7.5, or leave it empty for the generator's default",
            )
            return math.nan
        return value

    def size(self, raw: RawPrompt, name: str) -> int | None:
        value = getattr(raw, name)
        if _missing(value):
            return None
        number = _integer(value)
        if number is None or number <= 0 or number % 8:
            self.add(
                "size",
                raw.where,
                f"{name} {value!r} is not a positive multiple of 8",
                f"use a {name} such as 512 (Stable Diffusion needs multiples of 8), or leave it"
                " empty",
            )
            return None
        return number

    def negative(self, raw: RawPrompt) -> str | None:
        if _missing(raw.negative_prompt):
            return None
        text = _text(raw.negative_prompt)
        return text if text is not None else str(raw.negative_prompt)

    def given_id(self, raw: RawPrompt) -> str | None:
        if _missing(raw.prompt_id):
            return None
        value = raw.prompt_id
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        if ":" in text or any(ch.isspace() for ch in text):
            self.add(
                "prompt-id",
                raw.where,
                f"prompt_id {text!r} contains ':' or white space (image ids are"
                " generator:prompt_id:index)",
                "use letters, digits, '-', '_' or '.' only",
            )
        return text


def build(raws: list[RawPrompt], *, kind: Kind, source: Path, id_prefix: str) -> PromptSet:
    """Check every row, derive ids and seeds, and return the set or raise with every issue."""
    name = str(source)
    if not raws:
        raise DatasetError(
            name, [Issue("empty", source.name, "contains no prompts", "add at least one row")]
        )
    check = _Checker()
    records = []
    wheres = []
    seeds_given = ids_given = 0
    for raw in raws:
        prompt = check.prompt(raw)
        categories = check.categories(raw)
        seed = check.seed(raw)
        guidance = check.guidance(raw)
        width = check.size(raw, "width")
        height = check.size(raw, "height")
        negative = check.negative(raw)
        prompt_id = check.given_id(raw)
        seeds_given += seed is not None
        ids_given += prompt_id is not None
        if prompt_id is None:
            prompt_id = derived_id(
                id_prefix,
                (
                    prompt,
                    negative,
                    "" if _missing(raw.seed) else seed,
                    "" if math.isnan(guidance) else repr(guidance),
                    width,
                    height,
                    *raw.id_extra,
                ),
            )
        records.append(
            {
                "prompt_id": prompt_id,
                "prompt": prompt,
                "categories": categories,
                "seed": default_seed(prompt_id) if seed is None else seed,
                "guidance": guidance,
                "width": width,
                "height": height,
                "negative_prompt": negative,
            }
        )
        wheres.append(raw.where)
    ids = pd.Series([r["prompt_id"] for r in records])
    places = pd.Series(wheres)
    for prompt_id, group in places[ids.duplicated(keep=False)].groupby(
        ids[ids.duplicated(keep=False)], sort=True
    ):
        shown = ", ".join(group.head(3))
        more = f" (and {len(group) - 3} more rows)" if len(group) > 3 else ""
        check.add(
            "duplicate-id",
            shown + more,
            f"prompt_id {prompt_id!r} appears {len(group)} times",
            "give each row its own prompt_id, or drop the repeated rows (derived ids repeat"
            " when prompt, seed, guidance and size are all the same)",
        )
    if check.issues:
        raise DatasetError(name, check.issues)
    frame = to_frame(records)
    return PromptSet(
        frame=frame,
        kind=kind,
        fingerprint=fingerprint(frame),
        source=source,
        seeds_given=seeds_given,
        ids_given=ids_given,
    )


def to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "prompt_id": pd.Series([r["prompt_id"] for r in records], dtype=object),
            "prompt": pd.Series([r["prompt"] for r in records], dtype=object),
            "categories": pd.Series([list(r["categories"]) for r in records], dtype=object),
            "seed": pd.Series([r["seed"] for r in records], dtype="int64"),
            "guidance": pd.Series([r["guidance"] for r in records], dtype="float64"),
            "width": pd.Series([r["width"] for r in records], dtype="Int64"),
            "height": pd.Series([r["height"] for r in records], dtype="Int64"),
            "negative_prompt": pd.Series([r["negative_prompt"] for r in records], dtype=object),
        }
    )
    frame = frame.sort_values("prompt_id", kind="stable").reset_index(drop=True)
    return frame[list(COLUMNS)]


def fingerprint(frame: pd.DataFrame) -> str:
    """A content fingerprint: the same for the same prompts, whatever the row order or file."""
    digest = hashlib.blake2b(digest_size=16)
    ordered = frame.sort_values("prompt_id", kind="stable")
    row: dict[Any, Any]
    for row in ordered.to_dict("records"):
        parts = (
            row["prompt_id"],
            row["prompt"],
            "|".join(row["categories"]),
            row["seed"],
            repr(float(row["guidance"])),
            "" if _missing(row["width"]) else int(row["width"]),
            "" if _missing(row["height"]) else int(row["height"]),
            "" if row["negative_prompt"] is None else row["negative_prompt"],
        )
        digest.update("\x1f".join(str(p) for p in parts).encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()
