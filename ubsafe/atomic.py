"""Atomic file writes: a uniquely named temp file in the destination folder, renamed when complete.

A reader never sees a partial file under the final name: a process killed mid-write leaves only a
`.ubsafe-tmp-*` file, which no completeness check accepts and which the next write ignores.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".ubsafe-tmp-"

#: Test hook: `NAME:MARKER` makes the writer of a file named NAME stop half-way through its temp
#: file, create MARKER, and wait to be killed, so that kill tests hit a known point. Only the first
#: writer to create MARKER stops (a requeued or relaunched task then runs through).
PAUSE_ENV = "UBSAFE_TEST_PAUSE_WRITE"


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `final`; on success fsync and rename it to `final`.

    The caller writes the file at the yielded path (any library, any format). On an exception the
    temp file is removed and `final` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{final.name}"
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def pause_point(final: str | os.PathLike[str]) -> None:
    """Stop here for good when `UBSAFE_TEST_PAUSE_WRITE` names this file (see `PAUSE_ENV`)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    name, _, marker = spec.partition(":")
    if Path(final).name != name or not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    while True:
        time.sleep(3600)


def write_bytes(final: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write `data` to `final`."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text(final: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 `text` to `final`."""
    return write_bytes(final, text.encode("utf-8"))


def remove_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Delete leftover temp files of killed writers in `folder`; return how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed
