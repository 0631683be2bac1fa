"""Progress bars for long work: on for an interactive terminal, off in batch logs unless asked.

`UBSAFE_PROGRESS=1` forces bars on (for example in a Slurm log), `0` forces them off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    setting = os.environ.get("UBSAFE_PROGRESS", "auto")
    if setting in ("0", "1"):
        return setting == "1"
    return sys.stderr.isatty()


def progress(
    iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    if not enabled():
        yield from iterable
        return
    from tqdm import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, dynamic_ncols=True, leave=False)
