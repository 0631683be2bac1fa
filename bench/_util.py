"""Timing helpers shared by the benchmarks: warm-up, best-of-k wall time, a context header."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any


def best_time(func: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """The fastest of `repeat` wall-clock timings of `func()`, after `warmup` untimed calls.

    Best-of-k rather than the mean: on a shared machine the minimum is the run least disturbed by
    other processes, which is what a ratio between two implementations should compare.
    """
    for _ in range(warmup):
        func()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def header(title: str) -> None:
    """Print what the numbers depend on: machine, cores, Numba threads, load."""
    import numba

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"== {title}")
    print(
        f"   {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numba {numba.__version__} with {numba.get_num_threads()} threads, "
        f"load average {load:.1f}"
    )
