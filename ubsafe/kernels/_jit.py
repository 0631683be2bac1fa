"""Shared Numba settings for the kernels.

Caching: compiled kernels are cached on disk (`cache=True`) so that a process after the first one
starts in about a second instead of compiling for tens of seconds. Numba stores the cache beside the
sources in `__pycache__`, or under `NUMBA_CACHE_DIR` when that is set. On a shared filesystem where
many array tasks import ubsafe at the same moment, point `NUMBA_CACHE_DIR` at node-local scratch
(numba's own writes are atomic, but concurrent first compiles on NFS have been reported to
crash), or set `UBSAFE_NUMBA_CACHE=0` to compile in memory only. Numba checks a cached kernel
against its own source file only, and kernels inline helpers from other files of this package:
after editing a helper in place (a git checkout, an editable install), delete
`ubsafe/kernels/__pycache__` (or the `NUMBA_CACHE_DIR`) so that the kernels are recompiled.

Floating point: no kernel uses fast-math flags that assume the absence of NaN or infinity, so NaN
checks stay real. `error_model="numpy"` makes a stray 0/0 give NaN instead of raising; every metric
guards its denominators explicitly anyway.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])

#: Whether compiled kernels are written to and read from numba's on-disk cache.
CACHE: bool = os.environ.get("UBSAFE_NUMBA_CACHE", "1").strip() not in ("0", "false", "no", "off")

#: Fast-math flags that allow vectorised reductions but keep NaN and infinity semantics.
REASSOC = frozenset({"reassoc", "contract", "nsz"})


def kernel(parallel: bool = False, fastmath: frozenset[str] | bool = False) -> Callable[[F], F]:
    """Decorate a top-level kernel: nopython, cached per `CACHE`, NumPy's error model."""

    def wrap(func: F) -> F:
        jitted = numba.njit(
            parallel=parallel,
            cache=CACHE,
            error_model="numpy",
            fastmath=set(fastmath) if isinstance(fastmath, frozenset) else fastmath,
        )(func)
        return cast(F, jitted)

    return wrap


def helper(func: F) -> F:
    """Decorate a small function that kernels call (LLVM inlines it into its callers)."""
    return cast(F, numba.njit(cache=CACHE, error_model="numpy")(func))
