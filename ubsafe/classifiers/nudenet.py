"""NudeNet's detector (the nudenet wheel's `NudeDetector`, ONNX) as an image classifier.

Score: the highest detection score among the unsafe classes (0 when none is detected); unsafe iff
the score exceeds the threshold. Defaults (registry entry `nudenet`): the exposed sexual body parts,
threshold 0.6. The detector only reports detections scoring at least 0.25 (its NMS threshold), so a
threshold below 0.25 behaves like 0.25.

This differs from the paper: UnsafeBench used NudeNet's older Keras image classifier (a CNN on
256×256 nearest-resized images giving [unsafe, safe] probabilities), which is no longer distributed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ubsafe.classifiers.base import Decision, ImageClassifier, decision
from ubsafe.classifiers.registry import ClassifierEntry, resolve_options

if TYPE_CHECKING:
    from PIL import Image

#: The detector's classes, in the order of the model's outputs (nudenet 3.4).
LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)


@dataclass(frozen=True)
class Detection:
    """One detected region: its class, score and box (x, y, width, height) in pixels."""

    label: str
    score: float
    box: tuple[int, int, int, int]


class NudeNetClassifier(ImageClassifier):
    """NudeNet's detector with a configurable set of unsafe classes and a score threshold."""

    def __init__(
        self,
        *,
        unsafe_classes: Sequence[str],
        threshold: float,
        model_path: str = "",
        inference_resolution: int = 320,
        entry: ClassifierEntry | None = None,
    ) -> None:
        unknown = [c for c in unsafe_classes if c not in LABELS]
        if unknown:
            raise ValueError(
                f"nudenet: unsafe class {unknown[0]!r} is not a detector class "
                f"(valid: {', '.join(LABELS)})"
            )
        if not unsafe_classes:
            raise ValueError("nudenet: unsafe_classes is empty; name at least one detector class")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"nudenet: threshold {threshold} must lie in [0, 1)")
        if model_path and not Path(model_path).is_file():
            raise FileNotFoundError(
                f"nudenet: model_path {model_path} does not exist; leave it empty for the model "
                "shipped in the nudenet wheel"
            )
        from nudenet import NudeDetector

        self.name = entry.name if entry else "nudenet"
        self.categories = entry.categories if entry else ()
        self.entry = entry
        self.unsafe_classes = frozenset(unsafe_classes)
        self.threshold = float(threshold)
        self._detector = NudeDetector(
            model_path=model_path or None, inference_resolution=inference_resolution
        )

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """All detections per image, as `NudeDetector.detect` reports them for the image's file."""
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: Image.Image) -> list[Detection]:
        # The detector expects what cv2.imread returns: 8-bit BGR, height × width × 3. Images go
        # one at a time: batching changes the model's output in the last bits.
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        return [
            Detection(str(d["class"]), float(d["score"]), tuple(int(v) for v in d["box"]))  # type: ignore[arg-type]
            for d in self._detector.detect(bgr)
        ]

    def scores(self, detections: Sequence[Sequence[Detection]]) -> np.ndarray:
        """Per image, the highest score among unsafe-class detections (0 when none)."""
        return np.array(
            [
                max((d.score for d in found if d.label in self.unsafe_classes), default=0.0)
                for found in detections
            ],
            dtype=np.float64,
        )

    def decide_images(self, images: Sequence[Image.Image]) -> Decision:
        score = self.scores(self.detect(images))
        return decision(score > self.threshold, score)


def load(
    entry: ClassifierEntry,
    weights_dir: Path,
    *,
    device: str = "cpu",
    fitted_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> NudeNetClassifier:
    """The detector with the entry's options (updated by `options`)."""
    resolved = resolve_options(entry, options)
    return NudeNetClassifier(
        unsafe_classes=list(resolved["unsafe_classes"]),
        threshold=float(resolved["threshold"]),
        model_path=str(resolved["model_path"]),
        inference_resolution=int(resolved["inference_resolution"]),
        entry=entry,
    )
