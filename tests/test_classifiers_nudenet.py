"""nudenet against calling the wheel's `NudeDetector().detect()` directly on the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ubsafe.classifiers import ImageClassifier, get_entry, load_classifier
from ubsafe.classifiers.nudenet import LABELS
from ubsafe.data.images import decode_image

nudenet = pytest.importorskip("nudenet")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """PNG files made from scikit-image's bundled samples: crops, flips, resizes, grey, noise."""
    folder = tmp_path_factory.mktemp("images")
    astronaut = Image.fromarray(skimage_data.astronaut())
    camera = Image.fromarray(skimage_data.camera()).convert("RGB")
    wheel = Image.fromarray(skimage_data.colorwheel())
    noise = np.random.default_rng(0).integers(0, 256, (180, 260, 3), dtype=np.uint8)
    images = {
        "astronaut": astronaut,
        "astronaut_crop": astronaut.crop((60, 0, 360, 300)),
        "astronaut_flip_small": astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize(
            (200, 160)
        ),
        "camera": camera,
        "wheel": wheel,
        "wheel_wide": wheel.resize((500, 300)),
        "coffee": Image.fromarray(skimage_data.coffee()),
        "noise": Image.fromarray(noise),
    }
    paths = []
    for name, image in images.items():
        path = folder / f"{name}.png"
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def reference_detections(image_files: list[Path]) -> list[list[dict]]:
    detector = nudenet.NudeDetector()
    return [detector.detect(str(path)) for path in image_files]


def expected(detections: list[list[dict]], classes: set[str], threshold: float) -> tuple:
    score = np.array(
        [
            max([d["score"] for d in found if d["class"] in classes], default=0.0)
            for found in detections
        ]
    )
    return (score > threshold).astype(np.int8), score.astype(np.float32)


@pytest.mark.parametrize(
    "options",
    [None, {"unsafe_classes": ["FACE_FEMALE", "FACE_MALE"], "threshold": 0.5}],
    ids=["default", "faces"],
)
def test_decisions_match_the_detector_on_the_files(
    image_files: list[Path], reference_detections: list[list[dict]], options: dict | None
) -> None:
    classifier = load_classifier("nudenet", "/nonexistent-weights-dir", options=options)
    assert isinstance(classifier, ImageClassifier)
    images = [decode_image(path.read_bytes()) for path in image_files]

    pred, score = classifier.decide_images(images)

    defaults = dict(get_entry("nudenet").options)
    classes = set((options or defaults)["unsafe_classes"])
    threshold = (options or defaults)["threshold"]
    want_pred, want_score = expected(reference_detections, classes, threshold)
    assert 0 < want_pred.sum() < len(want_pred)  # both outcomes occur on these images
    assert pred.dtype == np.int8 and score.dtype == np.float32
    np.testing.assert_array_equal(pred, want_pred)
    np.testing.assert_array_equal(score, want_score)


def test_detections_equal_the_detectors_own(
    image_files: list[Path], reference_detections: list[list[dict]]
) -> None:
    classifier = load_classifier("nudenet", "/nonexistent-weights-dir")
    images = [decode_image(path.read_bytes()) for path in image_files]
    found = classifier.detect(images)  # type: ignore[attr-defined]
    got = [[(d.label, d.score, list(d.box)) for d in image] for image in found]
    want = [[(d["class"], d["score"], d["box"]) for d in image] for image in reference_detections]
    assert got == want


def test_labels_are_the_detectors_classes() -> None:
    assert list(LABELS) == list(vars(nudenet.nudenet)["__labels"])


def test_default_unsafe_classes_are_exposed_sexual_body_parts() -> None:
    classes = set(get_entry("nudenet").options["unsafe_classes"])
    assert classes <= set(LABELS)
    assert all(c.endswith("_EXPOSED") for c in classes)
    assert "FEMALE_GENITALIA_EXPOSED" in classes and "FEET_EXPOSED" not in classes


def test_bad_options_are_refused_with_the_valid_values() -> None:
    with pytest.raises(ValueError, match=r"not a detector class .*FACE_FEMALE"):
        load_classifier("nudenet", ".", options={"unsafe_classes": ["NUDITY"]})
    with pytest.raises(ValueError, match=r"unknown option 'treshold' .*threshold"):
        load_classifier("nudenet", ".", options={"treshold": 0.3})
    with pytest.raises(ValueError, match="threshold"):
        load_classifier("nudenet", ".", options={"threshold": "high"})
