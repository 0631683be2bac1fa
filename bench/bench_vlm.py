"""VLM benchmarks, each a ratio against a baseline measured in the same run.

1. Generation throughput of the tiny random LLaVA (llava-hf layout, loaded by the real loader):
   responses per second at batch size 8 against batch size 1, same images, same prompt.
2. The fast PerspectiveVision variant at UnsafeBench scale (8,109 train rows × 768, 11
   categories): fit time against scikit-learn fitting the same 11 balanced probes one by one, and
   F1 on AI-generated test rows against a plain probe trained on real rows only.

    python bench/bench_vlm.py [--images 16] [--new-tokens 24] [--dim 768]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def bench_generation(n_images: int, new_tokens: int) -> None:
    from PIL import Image

    from ubsafe.testing import tiny
    from ubsafe.vlm import prompts
    from ubsafe.vlm.converter import RuleConverter
    from ubsafe.vlm.judge import GenerationSettings
    from ubsafe.vlm.llava import load_llava

    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(n_images)
    ]
    prompt = prompts.judge_prompts("Violence")[1]
    with tempfile.TemporaryDirectory() as weights:
        tiny.save_tiny_llava(weights)
        judge = load_llava(
            weights,
            RuleConverter(),
            device="cpu",
            settings=GenerationSettings(max_new_tokens=new_tokens),
        )
        judge.generate(images[:2], [prompt] * 2)  # warm-up
        rates = {}
        for batch in (1, 8):
            start = time.perf_counter()
            for i in range(0, n_images, batch):
                chunk = images[i : i + batch]
                judge.generate(chunk, [prompt] * len(chunk))
            rates[batch] = n_images / (time.perf_counter() - start)
    print(f"tiny LLaVA generation, {n_images} images, up to {new_tokens} new tokens")
    print(f"  batch 1: {rates[1]:8.2f} responses/s")
    print(f"  batch 8: {rates[8]:8.2f} responses/s")
    print(f"  ratio batch 8 / batch 1: {rates[8] / rates[1]:.2f}x")


def _world(dim: int, seed: int = 0):
    from ubsafe.taxonomy import CATEGORIES

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    # Unit directions scaled so that one category's unsafe shift is ~2 noise standard deviations:
    # separable enough to learn, not so much that every probe is perfect.
    rng = np.random.default_rng(seed)
    base = unit(rng.normal(size=dim)) * 12
    centers = unit(rng.normal(size=(len(CATEGORIES), dim))) * 6
    real_dirs = unit(rng.normal(size=(len(CATEGORIES), dim)))
    ai_dirs = unit(0.4 * real_dirs + 0.9 * unit(rng.normal(size=(len(CATEGORIES), dim))))
    style = unit(rng.normal(size=dim)) * 6

    def sample(n: int, ai: bool):
        category = rng.integers(0, len(CATEGORIES), n)
        unsafe = rng.random(n) < 0.4
        dirs = ai_dirs if ai else real_dirs
        x = base + centers[category] + rng.normal(size=(n, dim))
        x += unsafe[:, None] * dirs[category] * 4.0 + (style if ai else 0)
        return x.astype(np.float32), unsafe.astype(int), np.asarray(CATEGORIES)[category]

    return sample


def bench_fast(dim: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from ubsafe.classifiers.perspective_fast import FastSettings, fit_fast
    from ubsafe.taxonomy import CATEGORIES

    sample = _world(dim)
    xr, yr, cr = sample(4045, ai=False)  # UnsafeBench train split: 4,045 LAION + 4,064 Lexica
    xa, ya, ca = sample(4064, ai=True)
    x = np.concatenate([xr, xa])
    y = np.concatenate([yr, ya])
    cats = np.array([*cr, *ca])
    xt, yt, _ = sample(1022, ai=True)  # the test split's Lexica rows

    settings = FastSettings()
    fit_fast(x[:200], y[:200], cats[:200])  # warm-up: torch's optimizer imports load once
    start = time.perf_counter()
    fast = fit_fast(x, y, cats, settings=settings)
    fast_seconds = time.perf_counter() - start

    feats = fast.features(x).numpy()
    start = time.perf_counter()
    for name in CATEGORIES:
        target = (y == 1) & (cats == name)
        LogisticRegression(
            C=1 / (settings.l2 * len(x)), class_weight="balanced", max_iter=1000
        ).fit(feats, target)
    sklearn_seconds = time.perf_counter() - start

    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    plain = LogisticRegression(max_iter=5000).fit(unit(xr), yr)
    fast_f1 = f1_score(yt, fast.decide(xt)[0])
    plain_f1 = f1_score(yt, plain.predict(unit(xt)))
    print(f"fast PerspectiveVision, {len(x)} train rows x {dim}, 11 probes")
    print(f"  fit: {fast_seconds:.2f} s; scikit-learn, same probes: {sklearn_seconds:.2f} s")
    print(f"  ratio scikit-learn / fast: {sklearn_seconds / fast_seconds:.2f}x")
    print(
        f"  F1 on AI-generated test rows: fast {fast_f1:.3f}, real-only plain probe {plain_f1:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    bench_generation(args.images, args.new_tokens)
    bench_fast(args.dim)


if __name__ == "__main__":
    main()
