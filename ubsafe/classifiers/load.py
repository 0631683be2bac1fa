"""`load_classifier`: from a registry name to a ready classifier, weights checked first."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ubsafe.classifiers.base import EmbeddingClassifier, ImageClassifier
from ubsafe.classifiers.registry import get_entry, resolve_options
from ubsafe.weights import require


def load_classifier(
    name: str,
    weights_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    fitted_dir: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> EmbeddingClassifier | ImageClassifier:
    """The classifier `name` with its weights from `weights_dir` (`DIR/hf/<repo>/<filename>`).

    Every weight file is checked before anything is read: a missing one raises
    `MissingWeightsError` naming it and the fix. Fitted classifiers read
    `fitted_dir/<name>.safetensors` instead. `options` override the entry's `[options]` defaults
    (an unknown key raises). `device` is where the surrogate lives; `decide` runs on the CPU.
    """
    entry = get_entry(name)
    resolved = resolve_options(entry, options)
    require(name, entry.weights, weights_dir)
    module = importlib.import_module(entry.module)
    classifier = module.load(
        entry,
        Path(weights_dir),
        device=device,
        fitted_dir=Path(fitted_dir) if fitted_dir is not None else None,
        options=resolved,
    )
    expected = ImageClassifier if entry.is_image else EmbeddingClassifier
    if not isinstance(classifier, expected):
        raise TypeError(
            f"{entry.module}.load returned {type(classifier).__name__}, not {expected.__name__}"
        )
    return classifier
