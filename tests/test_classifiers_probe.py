"""The fitted probe: it learns, is deterministic, and round-trips through `load_classifier`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from ubsafe.classifiers import (
    EmbeddingClassifier,
    FittedWeightsMissingError,
    fit_entry,
    fit_probe,
    fitted_path,
    get_entry,
    load_classifier,
)

DIM = 32


def toy_problem(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw embeddings whose direction separates the classes; their norms vary wildly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    axis = np.zeros(DIM)
    axis[3] = 1.0
    directions = rng.normal(0.0, 1.0, (n, DIM))
    directions[:, 3] = np.abs(directions[:, 3]) + 0.5
    directions[:, 3] *= np.where(labels == 1, 1.0, -1.0)
    norms = rng.uniform(0.5, 40.0, (n, 1))
    embeddings = directions / np.linalg.norm(directions, axis=1, keepdims=True) * norms
    return embeddings.astype(np.float32), labels


def test_learns_a_separable_problem() -> None:
    x, y = toy_problem(0, 400)
    probe = fit_probe(x, y, seed=0)
    pred, score = probe.decide(x)
    assert (pred == y).mean() == 1.0
    x_test, y_test = toy_problem(1, 400)
    pred_test, _ = probe.decide(x_test)
    assert (pred_test == y_test).mean() >= 0.97
    assert score.dtype == np.float32 and pred.dtype == np.int8


def test_is_the_logistic_regression_on_normalised_standardised_features() -> None:
    # The stored linear map must reproduce scikit-learn's own model on the same features.
    x, y = toy_problem(2, 300)
    y = np.where(
        np.random.default_rng(9).random(300) < 0.15, 1 - y, y
    )  # noisy labels: finite weights
    probe = fit_probe(x, y, seed=0, C=0.5)
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    features = (unit - unit.mean(axis=0)) / unit.std(axis=0)
    model = LogisticRegression(C=0.5, max_iter=1000).fit(features, y)

    pred, score = probe.decide(x)

    np.testing.assert_allclose(score, model.decision_function(features), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred, model.predict(features))


def test_fit_is_deterministic_and_saves_identical_files(tmp_path: Path) -> None:
    x, y = toy_problem(3, 500)
    first = fit_probe(x, y, seed=7, encoder="tiny", sources=("real",))
    second = fit_probe(x, y, seed=7, encoder="tiny", sources=("real",))
    assert first.weight.tobytes() == second.weight.tobytes() and first.bias == second.bias
    a, b = first.save(tmp_path / "a.safetensors"), second.save(tmp_path / "b.safetensors")
    assert a.read_bytes() == b.read_bytes()


def test_round_trip_through_load_classifier(tmp_path: Path) -> None:
    x, y = toy_problem(4, 300)
    entry = get_entry("probe-real")
    probe = fit_entry(entry, x, y, seed=1, encoder="tiny")
    probe.save(fitted_path(tmp_path, "probe-real"))

    loaded = load_classifier("probe-real", tmp_path / "no-weights", fitted_dir=tmp_path)

    assert isinstance(loaded, EmbeddingClassifier)
    assert loaded.encoder == "tiny" and loaded.dim == DIM  # type: ignore[attr-defined]
    assert loaded.sources == ("real",) and loaded.n == 300  # type: ignore[attr-defined]
    assert loaded.n_unsafe == int(y.sum())  # type: ignore[attr-defined]
    assert loaded.categories == entry.categories
    for got, want in zip(loaded.decide(x), probe.decide(x), strict=True):
        assert got.tobytes() == want.tobytes()


def test_a_rows_result_does_not_depend_on_its_batch() -> None:
    x, y = toy_problem(8, 300)
    probe = fit_probe(x, y, seed=0)
    pred, score = probe.decide(x)
    for start, stop in ((0, 1), (4, 11), (20, 299)):
        p, s = probe.decide(x[start:stop])
        assert p.tobytes() == pred[start:stop].tobytes()
        assert s.tobytes() == score[start:stop].tobytes()


def test_surrogate_agrees_and_has_gradients() -> None:
    x, y = toy_problem(5, 200)
    probe = fit_probe(x, y, seed=0)
    pred, score = probe.decide(x)
    inputs = torch.from_numpy(x).requires_grad_(True)
    logits = probe.surrogate()(inputs)
    away = np.abs(score) > 1e-4
    np.testing.assert_array_equal(logits.argmax(dim=1).numpy()[away], pred[away])
    np.testing.assert_allclose(
        (logits[:, 1] - logits[:, 0]).detach().numpy(), score, rtol=1e-4, atol=1e-4
    )
    logits[:, 1].sum().backward()
    assert inputs.grad is not None and torch.isfinite(inputs.grad).all()


def test_missing_fitted_file_says_to_run_the_fit_stage(tmp_path: Path) -> None:
    with pytest.raises(FittedWeightsMissingError, match="run the fit stage"):
        load_classifier("probe-all", tmp_path, fitted_dir=tmp_path)
    with pytest.raises(FittedWeightsMissingError, match="fitted_dir"):
        load_classifier("probe-all", tmp_path)


def test_a_file_of_another_entry_is_refused(tmp_path: Path) -> None:
    x, y = toy_problem(6, 100)
    probe = fit_entry(get_entry("probe-real"), x, y, seed=0, encoder="tiny")
    probe.save(fitted_path(tmp_path, "probe-all"))  # misplaced
    with pytest.raises(ValueError, match="re-run the fit stage"):
        load_classifier("probe-all", tmp_path, fitted_dir=tmp_path)


def test_training_rows_of_one_class_are_refused() -> None:
    x, _ = toy_problem(7, 50)
    with pytest.raises(ValueError, match="50 safe and 0 unsafe"):
        fit_probe(x, np.zeros(50, dtype=int), seed=0, sources=("real",))
