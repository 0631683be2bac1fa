"""The perturbed-vs-clean comparison kernels on cached float16 embeddings.

1,000,000 clean/perturbed pairs of 768-dimensional float16 embeddings (10,000 images x 100
perturbation-severity variants; 5 classifiers; groups = source x perturbation x severity):

- per-row cosine, decision flips and joint cells per classifier, mean cosine per group: compared
  with (a) the memory bandwidth a plain copy of the same arrays reaches in this run (goal >= 50 %)
  and (b) a straightforward NumPy version of the same work (goal >= 5x);
- Robust Accuracy and flip-rate bootstrap intervals for every (classifier, group), timed alone.

    PYTHONPATH=. python bench/bench_compare.py [--rows 1000000] [--dim 768]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import prange

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import best_time, header

from ubsafe.kernels import (
    bootstrap_robustness,
    group_mean,
    group_seeds,
    joint_counts,
    row_cosine,
)

N_VARIANTS = 100  # 20 perturbations x 5 severities
N_CLASSIFIERS = 5
N_SOURCES = 2
CHUNK = 65_536


def synthetic_embeddings(rows: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float16 clean embeddings and perturbed ones that drift by a row-dependent amount."""
    rng = np.random.default_rng(seed)
    clean = np.empty((rows, dim), dtype=np.float16)
    perturbed = np.empty_like(clean)
    for start in range(0, rows, CHUNK):
        stop = min(start + CHUNK, rows)
        base = rng.standard_normal((stop - start, dim), dtype=np.float32)
        drift = rng.uniform(0.01, 0.8, (stop - start, 1)).astype(np.float32)
        clean[start:stop] = base
        perturbed[start:stop] = base + drift * rng.standard_normal(base.shape, dtype=np.float32)
    return clean, perturbed


def synthetic_decisions(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    n_images = rows // N_VARIANTS
    image = np.arange(rows) // N_VARIANTS
    label_img = (rng.random(n_images) < 0.4).astype(np.int8)
    source_img = rng.integers(0, N_SOURCES, n_images)
    variant = np.arange(rows) % N_VARIANTS
    out = {
        "label": label_img[image],
        "group": (source_img[image] * N_VARIANTS + variant).astype(np.int64),
    }
    for c in range(N_CLASSIFIERS):
        clean_img = np.where(rng.random(n_images) < 0.85, label_img, 1 - label_img)
        pred_clean = clean_img[image].astype(np.int8)
        flip = rng.random(rows) < 0.02 + 0.2 * (variant % 5) / 4  # more flips at higher severity
        out[f"clean{c}"] = pred_clean
        out[f"pert{c}"] = np.where(flip, 1 - pred_clean, pred_clean).astype(np.int8)
    return out


def ubsafe_pass(
    clean: np.ndarray, perturbed: np.ndarray, d: dict[str, np.ndarray], n_groups: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    cosine = row_cosine(clean, perturbed)
    joints = [
        joint_counts(d["group"], d["label"], d[f"clean{c}"], d[f"pert{c}"], n_groups)
        for c in range(N_CLASSIFIERS)
    ]
    return cosine, joints, group_mean(d["group"], cosine, n_groups)


def numpy_cosine(clean: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    out = np.empty(clean.shape[0], dtype=np.float32)
    for start in range(0, clean.shape[0], CHUNK):
        a = clean[start : start + CHUNK].astype(np.float32)
        b = perturbed[start : start + CHUNK].astype(np.float32)
        dot = np.einsum("ij,ij->i", a, b)
        norms = np.sqrt(np.einsum("ij,ij->i", a, a)) * np.sqrt(np.einsum("ij,ij->i", b, b))
        out[start : start + CHUNK] = np.where(norms > 0, dot / np.where(norms > 0, norms, 1), 0)
    return out


def numpy_pass(
    clean: np.ndarray, perturbed: np.ndarray, d: dict[str, np.ndarray], n_groups: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    cosine = numpy_cosine(clean, perturbed)
    joints = []
    for c in range(N_CLASSIFIERS):
        code = 4 * d["label"] + 2 * d[f"clean{c}"] + d[f"pert{c}"]
        cells = np.bincount(d["group"] * 8 + code, minlength=n_groups * 8)
        joints.append(cells.reshape(n_groups, 8))
    sums = np.bincount(d["group"], weights=cosine, minlength=n_groups)
    return cosine, joints, sums / np.bincount(d["group"], minlength=n_groups)


@numba.njit(parallel=True, cache=True)
def parallel_copy(src: np.ndarray, dst: np.ndarray) -> None:
    for i in prange(src.shape[0]):
        dst[i] = src[i]


def copy_times(clean: np.ndarray, perturbed: np.ndarray, repeat: int) -> tuple[float, float]:
    """Best times to copy both arrays: NumPy's copy (one thread), a Numba prange copy (all)."""
    destination = np.empty_like(clean)
    destination.fill(0)  # fault the pages in before timing
    # Numba has no float16 on the CPU: copy the same bytes as uint16.
    src_a, src_b, dst = (x.view(np.uint16) for x in (clean, perturbed, destination))
    parallel_copy(src_a[:10], dst[:10])
    copy_np = best_time(
        lambda: (np.copyto(destination, clean), np.copyto(destination, perturbed)), repeat
    )
    copy_par = best_time(lambda: (parallel_copy(src_a, dst), parallel_copy(src_b, dst)), repeat)
    return copy_np, copy_par


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--n-boot", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    header("perturbed-vs-clean comparison kernels")
    start = time.perf_counter()
    clean, perturbed = synthetic_embeddings(args.rows, args.dim, seed=7)
    d = synthetic_decisions(args.rows, seed=7)
    n_groups = N_SOURCES * N_VARIANTS
    gb = clean.nbytes / 1e9
    print(
        f"   {args.rows:,} x {args.dim} float16 clean + perturbed ({2 * gb:.2f} GB), "
        f"{N_CLASSIFIERS} classifiers, {n_groups} groups; data made in "
        f"{time.perf_counter() - start:.0f} s"
    )

    ubsafe_pass(clean[:100], perturbed[:100], {k: v[:100] for k, v in d.items()}, n_groups)
    ours_cos, ours_joint, ours_mean = ubsafe_pass(clean, perturbed, d, n_groups)
    ref_cos, ref_joint, ref_mean = numpy_pass(clean, perturbed, d, n_groups)
    assert all((a == b).all() for a, b in zip(ours_joint, ref_joint, strict=True))
    print(
        f"   agreement with NumPy: cosine within {np.abs(ours_cos - ref_cos).max():.1e}, "
        f"group means within {np.abs(ours_mean - ref_mean).max():.1e}, joint cells equal"
    )

    copy_np, copy_par = copy_times(clean, perturbed, args.repeat)
    copy_bw = max(4 * gb / copy_np, 4 * gb / copy_par)  # read + write of both arrays
    t_cos = best_time(lambda: row_cosine(clean, perturbed), args.repeat)
    cos_bw = 2 * gb / t_cos  # both arrays read once
    t_ours = best_time(lambda: ubsafe_pass(clean, perturbed, d, n_groups), args.repeat)
    t_np_cos = best_time(lambda: numpy_cosine(clean, perturbed), args.repeat)
    t_numpy = best_time(lambda: numpy_pass(clean, perturbed, d, n_groups), args.repeat)

    print(
        f"   copy bandwidth (read + write): NumPy {4 * gb / copy_np:.1f} GB/s, "
        f"Numba parallel {4 * gb / copy_par:.1f} GB/s"
    )
    print(
        f"   row_cosine: {t_cos * 1e3:.0f} ms, {cos_bw:.1f} GB/s read = "
        f"{cos_bw / copy_bw:.0%} of the faster copy   goal >= 50 %"
    )
    print(
        f"   whole pass (cosine, joint cells x {N_CLASSIFIERS}, group means): ubsafe "
        f"{t_ours * 1e3:.0f} ms, NumPy {t_numpy * 1e3:.0f} ms: {t_numpy / t_ours:.1f}x   goal >= 5x"
    )
    print(f"   cosine alone: NumPy {t_np_cos * 1e3:.0f} ms: {t_np_cos / t_cos:.1f}x")

    joint = np.concatenate(ours_joint)
    names = [(f"classifier{i // n_groups}", f"group{i % n_groups}") for i in range(len(joint))]
    seeds = group_seeds(2025, names)
    bootstrap_robustness(joint[:2], seeds[:2], n_boot=10)
    t_boot = best_time(lambda: bootstrap_robustness(joint, seeds, n_boot=args.n_boot), 1)
    print(
        f"   Robust Accuracy + flip-rate CIs for {len(joint)} (classifier, group) cells, "
        f"B = {args.n_boot}: {t_boot * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
