"""Where compiled kernels are cached, and warming that cache once before many tasks use it.

Numba caches a kernel beside its source (`ubsafe/kernels/__pycache__`) when that folder is
writable. On a cluster the package often lives on a read-only file system, and then every array
task would compile every kernel again (tens of seconds each). `configure(run)` points
`NUMBA_CACHE_DIR` at `<cache_dir>/numba` (the shared cache directory of the config) or else
`<run>/numba-cache`, unless the user set `NUMBA_CACHE_DIR` or the package folder is writable.

`warm_once(run)` fills the cache under a file lock: the first task of a fan-out compiles every
kernel on tiny inputs and leaves a marker named after the numba version, the CPU and a digest of
the kernels' sources; the other tasks wait for it and then load compiled code. Without the lock
they would all compile at the same moment, which on shared file systems has been seen to crash.
Nothing here imports numba unless a warm-up is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ubsafe.rundir import Run

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent


def package_cache_writable(package_dir: Path = PACKAGE_DIR) -> bool:
    """Whether numba can write its in-tree cache (`__pycache__` beside the kernels)."""
    pycache = package_dir / "__pycache__"
    target = pycache if pycache.is_dir() else package_dir
    return os.access(target, os.W_OK | os.X_OK)


def cache_dir_for(run: Run, *, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The cache folder this process should use; None means numba's own in-tree default."""
    explicit = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit)
    if package_cache_writable(package_dir):
        return None
    shared = run.config.cache_dir
    return Path(shared) / "numba" if shared else run.root / "numba-cache"


def configure(run: Run, *, package_dir: Path = PACKAGE_DIR) -> Path:
    """Set `NUMBA_CACHE_DIR` where needed (see the module notes); return the folder in use."""
    chosen = cache_dir_for(run, package_dir=package_dir)
    if chosen is None:
        return package_dir / "__pycache__"
    chosen.mkdir(parents=True, exist_ok=True)
    if os.environ.get("NUMBA_CACHE_DIR") != str(chosen):
        os.environ["NUMBA_CACHE_DIR"] = str(chosen)
        if "numba" in sys.modules:  # numba read its settings at import: read them again
            from numba.core import config as numba_config

            numba_config.reload_config()
    return chosen


def marker_name() -> str:
    """Names one compiled set: numba version, CPU, Python, and the kernels' source files."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    cpu = platform.processor() or platform.machine()
    facts = f"{version('numba')}|{cpu}|{sys.version_info[:2]}|{digest.hexdigest()}"
    return "warm-" + hashlib.sha256(facts.encode()).hexdigest()[:16]


def warm_once(run: Run, *, package_dir: Path = PACKAGE_DIR) -> bool:
    """Compile every kernel into the cache unless a task did already; True if this one did."""
    from ubsafe.kernels._jit import CACHE

    folder = configure(run, package_dir=package_dir)
    if not CACHE:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / marker_name()
    if marker.exists():
        return False
    with _locked(folder / ".ubsafe-warm.lock"):
        if marker.exists():  # another task warmed it while this one waited
            return False
        from ubsafe.kernels.warmup import warm_up

        seconds = warm_up()
        log.info("compiled the numba kernels into %s in %.1f s", folder, seconds)
        from ubsafe import atomic

        atomic.write_text(marker, f"{seconds:.1f}\n")
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
