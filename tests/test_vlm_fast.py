"""The fast PerspectiveVision variant: per-category probes on embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from ubsafe.classifiers.perspective_fast import FastPerspective, FastSettings, fit_fast
from ubsafe.taxonomy import CATEGORIES

torch = pytest.importorskip("torch")


class ShiftedWorld:
    """Embeddings of real and AI-generated images: per-category unsafe directions, and for AI
    images a style offset and unsafe directions that only partly agree with the real ones — the
    distribution shift the paper reports between LAION and Lexica."""

    def __init__(self, dim: int = 48, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.dim = dim
        self.base = rng.normal(size=dim) * 3
        self.centers = rng.normal(size=(len(CATEGORIES), dim))
        self.real_dirs = rng.normal(size=(len(CATEGORIES), dim))
        self.ai_dirs = 0.4 * self.real_dirs + 0.9 * rng.normal(size=(len(CATEGORIES), dim))
        self.style = rng.normal(size=dim) * 1.5

    def sample(self, n: int, ai: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        category = self.rng.integers(0, len(CATEGORIES), n)
        unsafe = self.rng.random(n) < 0.4
        dirs = self.ai_dirs if ai else self.real_dirs
        x = self.base + self.centers[category] + self.rng.normal(size=(n, self.dim)) * 2.0
        x += unsafe[:, None] * dirs[category] * 0.8 + (self.style if ai else 0)
        return x.astype(np.float32), unsafe.astype(int), np.asarray(CATEGORIES)[category]


def _features(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """L2-normalise, then standardise with the reference rows' mean and (n−1) std."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return (unit - ref.mean(axis=0)) / ref.std(axis=0, ddof=1)


def test_each_probe_is_scikit_learns_balanced_logistic_regression():
    world = ShiftedWorld(dim=12, seed=1)
    x, y, cats = world.sample(600, ai=False)
    settings = FastSettings(l2=0.05, tolerance=1e-9, max_iter=2000)
    model = fit_fast(x, y, cats, settings=settings, probe_categories=CATEGORIES[:3])
    feats = _features(x, x)
    for c, name in enumerate(CATEGORIES[:3]):
        target = (y == 1) & (cats == name)
        # Balanced weights sum to N, so our per-weight ridge l2 is sklearn's C = 1 / (l2 · N).
        reference = LogisticRegression(
            C=1 / (settings.l2 * len(x)), class_weight="balanced", tol=1e-12, max_iter=10_000
        ).fit(feats, target)
        np.testing.assert_allclose(model.weight[c].numpy(), reference.coef_[0], atol=2e-3)
        assert float(model.bias[c]) == pytest.approx(reference.intercept_[0], abs=2e-3)


def test_without_negative_sampling_other_categories_unsafe_images_are_left_out():
    world = ShiftedWorld(dim=10, seed=2)
    x, y, cats = world.sample(500, ai=False)
    settings = FastSettings(l2=0.05, negative_sampling=False, tolerance=1e-9, max_iter=2000)
    model = fit_fast(x, y, cats, settings=settings, probe_categories=["Hate"])
    keep = (y == 0) | (cats == "Hate")
    target = (y == 1) & (cats == "Hate")
    reference = LogisticRegression(
        C=1 / (settings.l2 * keep.sum()), class_weight="balanced", tol=1e-12, max_iter=10_000
    ).fit(_features(x, x)[keep], target[keep])
    np.testing.assert_allclose(model.weight[0].numpy(), reference.coef_[0], atol=2e-3)


def test_decide_surrogate_and_listed_categories_agree():
    world = ShiftedWorld(seed=3)
    x, y, cats = world.sample(800, ai=True)
    model = fit_fast(x, y, cats)
    pred, score = model.decide(x)
    logits = model.category_logits(x).numpy()
    np.testing.assert_array_equal(pred, (logits.max(axis=1) > 0).astype(np.int8))
    np.testing.assert_allclose(score, 1 / (1 + np.exp(-logits.max(axis=1))), rtol=1e-5)
    surrogate = model.surrogate()
    embeddings = torch.from_numpy(x).requires_grad_(True)
    out = surrogate(embeddings)
    assert out.shape == (len(x), 2)
    np.testing.assert_array_equal(out.argmax(dim=1).numpy(), pred)
    out[:, 1].sum().backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    hate_only, _ = model.decide(x, listed=["Hate"])
    np.testing.assert_array_equal(
        hate_only, (logits[:, CATEGORIES.index("Hate")] > 0).astype(np.int8)
    )
    listed_surrogate = model.surrogate(["Hate", "Spam"])(torch.from_numpy(x)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(listed_surrogate, model.decide(x, ["Hate", "Spam"])[0])
    with pytest.raises(ValueError, match="subset of the fitted"):
        model.decide(x, listed=["Nudity"])


def test_a_category_without_positives_never_fires():
    world = ShiftedWorld(seed=4)
    x, y, cats = world.sample(400, ai=False)
    y = np.where(cats == "Spam", 0, y)
    model = fit_fast(x, y, cats)
    spam = model.category_logits(x)[:, CATEGORIES.index("Spam")]
    assert (spam < -1000).all()


def test_save_and_load_round_trip(tmp_path):
    from safetensors.torch import save_file

    world = ShiftedWorld(seed=5)
    x, y, cats = world.sample(300, ai=False)
    model = fit_fast(x, y, cats, settings=FastSettings(l2=0.03))
    path = model.save(tmp_path / "fitted" / "perspective-fast.safetensors")
    loaded = FastPerspective.load(path)
    assert loaded.categories == CATEGORIES and loaded.settings == model.settings
    np.testing.assert_array_equal(loaded.decide(x)[1], model.decide(x)[1])
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a fitted fast PerspectiveVision model"):
        FastPerspective.load(tmp_path / "other.safetensors")


def test_beats_the_real_only_probe_on_ai_generated_test_images():
    """Trained on real and AI-generated images, the fast variant wins where a plain probe trained on
    real images only loses: on AI-generated images."""
    world = ShiftedWorld(seed=6)
    xr, yr, cr = world.sample(1500, ai=False)
    xa, ya, ca = world.sample(1500, ai=True)
    xt, yt, _ = world.sample(1000, ai=True)
    fast = fit_fast(np.concatenate([xr, xa]), np.concatenate([yr, ya]), [*cr, *ca])
    fast_f1 = f1_score(yt, fast.decide(xt)[0])

    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    plain = LogisticRegression(max_iter=5000).fit(unit(xr), yr)
    plain_f1 = f1_score(yt, plain.predict(unit(xt)))
    assert fast_f1 > plain_f1 + 0.1
    # And on real images it stays at least as good as the probe trained on them.
    xq, yq, _ = world.sample(1000, ai=False)
    assert f1_score(yq, fast.decide(xq)[0]) >= f1_score(yq, plain.predict(unit(xq))) - 0.05
