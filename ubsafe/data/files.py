"""Reading image files named by a dataset, confined to where the dataset may point.

A downloaded dataset is untrusted input. Its manifest (or an UnsafeBench row's `path`) may name a
file only inside the dataset's own folder — symlinks are resolved before the check — or under a
folder the user allowed with `image_roots`. Files over `max_image_mb` are never read: the row is
skipped with its size as the reason. Reads stop at the limit even when the size on disk lies
(`/proc` files, a file growing while it is read).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Default size limit of one image file (or one image's bytes inside a Parquet file).
MAX_IMAGE_MB = 64.0


def _mb(n_bytes: int | float) -> str:
    return f"{n_bytes / 1e6:,.1f} MB"


@dataclass(frozen=True)
class ReadLimits:
    """Where image files may be read from, and how large one may be."""

    image_roots: tuple[Path, ...] = ()
    max_image_bytes: int = int(MAX_IMAGE_MB * 1e6)
    _resolved: tuple[Path, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        roots = tuple(Path(os.path.expanduser(str(r))).resolve() for r in self.image_roots)
        object.__setattr__(self, "_resolved", roots)

    @classmethod
    def from_config(cls, config: Any) -> ReadLimits:
        """From a run config's `image_roots` and `max_image_mb`."""
        return cls(
            image_roots=tuple(Path(p) for p in config.image_roots),
            max_image_bytes=int(config.max_image_mb * 1e6),
        )

    @classmethod
    def make(
        cls, image_roots: Iterable[str | os.PathLike[str]] = (), max_image_mb: float = MAX_IMAGE_MB
    ) -> ReadLimits:
        return cls(
            image_roots=tuple(Path(p) for p in image_roots),
            max_image_bytes=int(max_image_mb * 1e6),
        )

    def too_large(self, n_bytes: int) -> str | None:
        """The skip reason for an image of `n_bytes`, or None when it is within the limit."""
        if n_bytes <= self.max_image_bytes:
            return None
        return (
            f"too-large: the image file is {_mb(n_bytes)}, over the {_mb(self.max_image_bytes)} "
            "limit (raise max_image_mb to use it)"
        )


DEFAULT_LIMITS = ReadLimits()


class PathRefused(ValueError):
    """A dataset names a file outside the folders it may read; `fix` says how to allow it."""

    def __init__(self, message: str, fix: str):
        super().__init__(f"{message} (fix: {fix})")
        self.message = message
        self.fix = fix


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def confine(root: Path, rel: str, limits: ReadLimits = DEFAULT_LIMITS) -> Path:
    """The resolved path of `rel` (relative to `root`, or absolute), or `PathRefused`.

    Relative paths must resolve — symlinks followed — inside `root`; absolute ones, and anything
    that leaves `root`, must resolve under one of `limits.image_roots`.
    """
    given = Path(rel)
    base = root.resolve()
    resolved = (given if given.is_absolute() else base / given).resolve()
    if not given.is_absolute() and _inside(resolved, base):
        return resolved
    if any(_inside(resolved, allowed) for allowed in limits._resolved):
        return resolved
    if given.is_absolute():
        what = f"is an absolute path (it resolves to {resolved})"
    elif _inside(Path(os.path.normpath(base / given)), base):
        what = f"resolves through a symlink to {resolved}, outside the dataset folder {base}"
    else:
        what = f"climbs out of the dataset folder {base} (it resolves to {resolved})"
    allowed = ", ".join(str(p) for p in limits._resolved) or "none"
    raise PathRefused(
        f"image path {rel!r} {what}; allowed image_roots: {allowed}",
        "keep images inside the dataset folder, or allow their folder with "
        f'image_roots = ["{resolved.parent}"] in your run config (or --image-roots '
        f"{resolved.parent})",
    )


def read_image_file(path: Path, limits: ReadLimits = DEFAULT_LIMITS) -> tuple[bytes | None, str]:
    """The bytes of an already confined `path`, or None and the skip reason."""
    try:
        # O_NONBLOCK: opening a FIFO a dataset planted must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not _regular(info.st_mode):
                return None, "unreadable: not a regular file"
            reason = limits.too_large(info.st_size)
            if reason:
                return None, reason
            data = fh.read(limits.max_image_bytes + 1)
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or type(exc).__name__}"
    reason = limits.too_large(len(data))
    return (None, reason) if reason else (data, "")


def _regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def oversize_hash(n_bytes: int) -> str:
    """The stand-in content hash of an image too large to read (its size is all that is known)."""
    return hashlib.blake2b(f"too-large:{n_bytes}".encode(), digest_size=8).hexdigest()
