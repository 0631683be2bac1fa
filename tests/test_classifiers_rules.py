"""q16, multiheaded and nsfw_detector against NumPy re-computations of the reference rules.

Weights are random, written in the released formats and loaded back through `load_classifier`.
The references below are written from the classifiers' published code, in float64 NumPy,
independently of ubsafe's torch modules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from classifier_fixtures import (
    MULTIHEADED_HEADS,
    bisect_margin,
    random_multiheaded_states,
    random_nsfw_state,
    write_multiheaded,
    write_nsfw,
    write_q16,
)

from ubsafe.classifiers import EmbeddingClassifier, load_classifier

DIM = 768
N_RANDOM = 300


# --- independent references (float64 NumPy) ---------------------------------------------------


def q16_margin(prompts: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """cos(e, p1) − cos(e, p0); UnsafeBench: argmax of 100·cos → unsafe iff > 0 (tie → index 0)."""
    p = prompts.astype(np.float64)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    e = embeddings.astype(np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    cos = e @ p.T
    return cos[:, 1] - cos[:, 0]


def float64_arrays(state: dict) -> dict[str, np.ndarray]:
    return {k: v.numpy().astype(np.float64) for k, v in state.items()}


def multiheaded_max_logit(heads: list[dict[str, np.ndarray]], embeddings: np.ndarray) -> np.ndarray:
    """max over heads of Linear→ReLU→(Dropout off)→BatchNorm(eval, eps 1e-5)→Linear."""
    e = embeddings.astype(np.float64)
    logits = []
    for s in heads:
        h = np.maximum(e @ s["0.weight"].T + s["0.bias"], 0.0)
        h = (h - s["3.running_mean"]) / np.sqrt(s["3.running_var"] + 1e-5) * s["3.weight"] + s[
            "3.bias"
        ]
        logits.append(h @ s["4.weight"][0] + s["4.bias"][0])
    return np.max(logits, axis=0)


def nsfw_logit(s: dict[str, np.ndarray], embeddings: np.ndarray) -> np.ndarray:
    """L2-normalise, (x − mean)/sqrt(var), 768-64-512-256-1 with ReLU; sigmoid(z) > 0.5 ⇔ z > 0."""
    e = embeddings.astype(np.float64)
    x = e / np.linalg.norm(e, axis=1, keepdims=True)
    x = (x - s["norm.mean"]) / np.sqrt(s["norm.variance"])
    for k in (1, 2, 3):
        x = np.maximum(x @ s[f"linear_{k}.weight"].T + s[f"linear_{k}.bias"], 0.0)
    return x @ s["linear_4.weight"][0] + s["linear_4.bias"][0]


def sigmoid_rule(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z)) > 0.5


# --- fixtures -----------------------------------------------------------------------------------


def raw_embeddings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unnormalised CLIP-like vectors: a shared offset plus per-image variation."""
    offset = np.random.default_rng(7).normal(0.0, 0.3, DIM)
    return (offset + rng.normal(0.0, 0.5, (n, DIM))).astype(np.float32)


def near_threshold(
    margin: Callable[[np.ndarray], np.ndarray], rng: np.random.Generator, targets: tuple[float, ...]
) -> np.ndarray:
    """Embeddings whose reference margin lies at ± each target (bisection between a safe and an
    unsafe embedding), as float32."""
    pool = raw_embeddings(rng, 200).astype(np.float64)
    pool_margin = margin(pool)
    reach = 2 * max(targets)
    unsafe, safe = pool[pool_margin > reach], pool[pool_margin < -reach]
    rows = []
    for target in targets:
        for sign in (1.0, -1.0):
            for k in range(6):
                a, b = unsafe[k % len(unsafe)], safe[(k * 7 + 3) % len(safe)]
                rows.append(bisect_margin(lambda e: float(margin(e[None])[0]), a, b, sign * target))
    return np.asarray(rows, dtype=np.float32)


class Case:
    def __init__(self, name: str, classifier: EmbeddingClassifier, margin: Callable, scale: float):
        self.name = name
        self.classifier = classifier
        self.margin = margin  # reference margin: unsafe iff > 0
        self.scale = scale  # decide's score = scale · reference margin


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def q16_case(weights_dir: Path) -> Case:
    rng = np.random.default_rng(1)
    prompts = rng.normal(0.0, 0.8, (2, DIM)).astype(np.float16)  # row norms ≈ 22, as released
    write_q16(weights_dir, prompts)
    classifier = load_classifier("q16", weights_dir)
    assert isinstance(classifier, EmbeddingClassifier)
    return Case("q16", classifier, lambda e: q16_margin(prompts, e), 100.0)


@pytest.fixture(scope="module")
def multiheaded_case(weights_dir: Path) -> Case:
    rng = np.random.default_rng(2)
    states = random_multiheaded_states(rng)
    # Centre the heads so that about half of the random embeddings are unsafe.
    heads = [float64_arrays(states[name]) for name in MULTIHEADED_HEADS]
    shift = np.median(multiheaded_max_logit(heads, raw_embeddings(np.random.default_rng(3), 500)))
    for state in states.values():
        state["4.bias"] -= float(shift)
    write_multiheaded(weights_dir, states)
    heads = [float64_arrays(states[name]) for name in MULTIHEADED_HEADS]
    classifier = load_classifier("multiheaded", weights_dir)
    assert isinstance(classifier, EmbeddingClassifier)
    return Case("multiheaded", classifier, lambda e: multiheaded_max_logit(heads, e), 1.0)


@pytest.fixture(scope="module")
def nsfw_case(weights_dir: Path) -> Case:
    rng = np.random.default_rng(4)
    state = random_nsfw_state(rng)
    shift = np.median(
        nsfw_logit(float64_arrays(state), raw_embeddings(np.random.default_rng(5), 500))
    )
    state["linear_4.bias"] -= float(shift)
    write_nsfw(weights_dir, state)
    arrays = float64_arrays(state)
    classifier = load_classifier("nsfw_detector", weights_dir)
    assert isinstance(classifier, EmbeddingClassifier)
    return Case("nsfw_detector", classifier, lambda e: nsfw_logit(arrays, e), 1.0)


@pytest.fixture(params=["q16", "multiheaded", "nsfw_detector"])
def case(request: pytest.FixtureRequest) -> Case:
    fixture = {"q16": "q16_case", "multiheaded": "multiheaded_case", "nsfw_detector": "nsfw_case"}
    return request.getfixturevalue(fixture[request.param])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def embeddings() -> np.ndarray:
    return raw_embeddings(np.random.default_rng(11), N_RANDOM)


# --- tests --------------------------------------------------------------------------------------


def test_identical_decisions_on_random_and_near_threshold_embeddings(
    case: Case, embeddings: np.ndarray
) -> None:
    near = near_threshold(case.margin, np.random.default_rng(12), (1e-2, 1e-4, 1e-6))
    assert len(near) >= 30, "the near-threshold construction found too few points"
    batch = np.concatenate([embeddings, near])
    reference_margin = case.margin(batch)
    assert (np.abs(reference_margin) < 1e-3).sum() >= 20  # the batch does probe the threshold
    expected = reference_margin > 0
    assert 0.2 < expected.mean() < 0.8  # both outcomes, in numbers

    pred, score = case.classifier.decide(batch)

    assert pred.dtype == np.int8 and score.dtype == np.float32 and pred.shape == (len(batch),)
    np.testing.assert_array_equal(pred, expected.astype(np.int8))
    np.testing.assert_allclose(score, case.scale * reference_margin, rtol=1e-5, atol=1e-6)


def test_probability_rule_matches_sigmoid_threshold(
    multiheaded_case: Case, nsfw_case: Case, embeddings: np.ndarray
) -> None:
    # The papers state the rule as sigmoid(·) > 0.5 on the (max) head output.
    for case in (multiheaded_case, nsfw_case):
        pred, _ = case.classifier.decide(embeddings)
        np.testing.assert_array_equal(pred, sigmoid_rule(case.margin(embeddings)).astype(np.int8))


def test_float16_embeddings_are_decided_as_their_exact_float32_values(
    case: Case, embeddings: np.ndarray
) -> None:
    half = embeddings.astype(np.float16)
    pred, _ = case.classifier.decide(half)
    np.testing.assert_array_equal(pred, (case.margin(half.astype(np.float32)) > 0).astype(np.int8))


def test_a_rows_result_does_not_depend_on_its_batch(case: Case, embeddings: np.ndarray) -> None:
    pred, score = case.classifier.decide(embeddings)
    for start, stop in ((0, 1), (5, 8), (17, 81), (100, 299)):
        p, s = case.classifier.decide(embeddings[start:stop])
        assert p.tobytes() == pred[start:stop].tobytes()
        assert s.tobytes() == score[start:stop].tobytes()


def test_q16_is_scale_invariant_and_a_tie_is_safe(
    q16_case: Case, embeddings: np.ndarray, tmp_path: Path
) -> None:
    pred, _ = q16_case.classifier.decide(embeddings)
    scaled, _ = q16_case.classifier.decide(embeddings * np.float32(3.7))
    normalised, _ = q16_case.classifier.decide(
        embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    )
    np.testing.assert_array_equal(pred, scaled)
    np.testing.assert_array_equal(pred, normalised)

    same_row = np.repeat(np.random.default_rng(0).normal(0, 0.8, (1, DIM)), 2, axis=0)
    write_q16(tmp_path, same_row)
    tie = load_classifier("q16", tmp_path)
    assert isinstance(tie, EmbeddingClassifier)
    tie_pred, tie_score = tie.decide(embeddings)
    assert not tie_pred.any()
    assert not tie_score.any()


def test_multiheaded_reads_the_raw_embedding(
    multiheaded_case: Case, embeddings: np.ndarray
) -> None:
    # Normalising first changes its decisions (UnsafeBench feeds the unnormalised encode_image).
    normalised = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    pred_raw, _ = multiheaded_case.classifier.decide(embeddings)
    pred_normalised, _ = multiheaded_case.classifier.decide(normalised)
    np.testing.assert_array_equal(
        pred_normalised, (multiheaded_case.margin(normalised) > 0).astype(np.int8)
    )
    assert (pred_raw != pred_normalised).any()


def test_surrogate_argmax_agrees_and_has_gradients(case: Case, embeddings: np.ndarray) -> None:
    near = near_threshold(case.margin, np.random.default_rng(13), (1e-2, 1e-3))
    batch = np.concatenate([embeddings, near])
    pred, _ = case.classifier.decide(batch)
    module = case.classifier.surrogate()
    x = torch.from_numpy(batch).requires_grad_(True)
    logits = module(x)
    assert logits.shape == (len(batch), 2) and logits.dtype == torch.float32

    away = np.abs(case.margin(batch)) > 1e-4  # outside float32 noise at the boundary
    argmax = logits.argmax(dim=1).detach().numpy()
    np.testing.assert_array_equal(argmax[away], pred[away])
    margin = (logits[:, 1] - logits[:, 0]).detach().numpy()
    np.testing.assert_allclose(margin, case.scale * case.margin(batch), rtol=1e-3, atol=1e-4)

    (logits[:, 1] - logits[:, 0]).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=1) > 0).all()
    assert not any(p.requires_grad for p in module.parameters())


def test_bad_input_shapes_and_values_are_refused(case: Case) -> None:
    with pytest.raises(ValueError, match=r"shape \(4, 512\); expected \(N, 768\)"):
        case.classifier.decide(np.zeros((4, 512), dtype=np.float32))
    bad = np.ones((3, DIM), dtype=np.float32)
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match="rows 1"):
        case.classifier.decide(bad)
    pred, score = case.classifier.decide(np.zeros((0, DIM), dtype=np.float32))
    assert pred.shape == (0,) and score.shape == (0,)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_surrogate_on_the_gpu_agrees_with_the_cpu_decision(
    weights_dir: Path, q16_case: Case, embeddings: np.ndarray
) -> None:
    classifier = load_classifier("q16", weights_dir, device="cuda")
    assert isinstance(classifier, EmbeddingClassifier)
    pred, _ = classifier.decide(embeddings)
    np.testing.assert_array_equal(pred, q16_case.classifier.decide(embeddings)[0])
    logits = classifier.surrogate()(torch.from_numpy(embeddings).cuda())
    away = np.abs(q16_case.margin(embeddings)) > 1e-4
    np.testing.assert_array_equal(logits.argmax(dim=1).cpu().numpy()[away], pred[away])
