"""Unpickling a numpy array without letting the file run code.

Q16's prompt file is a plain pickle of a numpy array. A pickle can name any importable callable and
call it while loading; this unpickler resolves only the three globals a pickled ndarray needs and
refuses every other one before it is imported.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# numpy < 2 wrote `numpy.core.multiarray`, numpy >= 2 writes `numpy._core.multiarray`.
_RECONSTRUCT_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as function  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as function  # type: ignore[no-redef]
    return function


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves `_reconstruct`, `numpy.ndarray` and `numpy.dtype`; refuses any other global."""

    def __init__(self, file: BinaryIO, *, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module in _RECONSTRUCT_MODULES and name == "_reconstruct":
            return _reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to load global {module}.{name}; this file should hold only a "
            "numpy array. Re-download it with `ubsafe weights fetch` (it may have been altered)."
        )


def load_numpy_pickle(path: str | os.PathLike[str]) -> np.ndarray:
    """The numpy array pickled in `path`; anything that is not a plain array is refused."""
    path = Path(path)
    with open(path, "rb") as fh:
        value = NumpyOnlyUnpickler(fh, source=str(path)).load()
    if not isinstance(value, np.ndarray):
        raise pickle.UnpicklingError(f"{path}: holds a {type(value).__name__}, not a numpy array")
    return value
