"""Per-row cosine of perturbed against clean embeddings, float16 widening, per-group means."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest

from ubsafe.kernels import group_mean, row_cosine
from ubsafe.kernels import half as half_module
from ubsafe.kernels.half import half_bits_to_float32_portable, to_float32

ROOT = Path(__file__).resolve().parents[1]


def reference_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    dot = np.einsum("ij,ij->i", a64, b64)
    return dot / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def embedding_pairs(n: int, d: int, dtype: type, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = rng.standard_normal((n, d), dtype=np.float32)
    noise = rng.standard_normal((n, d), dtype=np.float32) * rng.uniform(0.01, 2.0, (n, 1))
    return clean.astype(dtype), (clean + noise.astype(np.float32)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_row_cosine_matches_float64_numpy(dtype: type) -> None:
    clean, perturbed = embedding_pairs(3000, 768, dtype, seed=1)
    got = row_cosine(clean, perturbed)
    assert got.dtype == np.float32 and got.shape == (3000,)
    np.testing.assert_allclose(got, reference_cosine(clean, perturbed), rtol=0, atol=1e-6)


def test_row_cosine_mixed_dtypes_and_strided_input() -> None:
    clean, perturbed = embedding_pairs(500, 512, np.float32, seed=2)
    half = perturbed.astype(np.float16)
    np.testing.assert_allclose(
        row_cosine(clean, half), reference_cosine(clean, half), rtol=0, atol=1e-6
    )
    strided = clean[::2]  # not contiguous: read through a contiguous copy of the same dtype
    np.testing.assert_allclose(
        row_cosine(strided, half[::2]), reference_cosine(strided, half[::2]), atol=1e-6
    )


def test_row_cosine_edge_values() -> None:
    clean, perturbed = embedding_pairs(6, 64, np.float16, seed=3)
    clean[0] = 0  # zero vector: defined as 0, as scikit-learn and torch
    clean[1] = perturbed[1] = 0
    perturbed[2, 5] = np.nan
    clean[3, 7] = np.inf
    perturbed[4] = -clean[4]
    got = row_cosine(clean, perturbed)
    assert got[0] == 0.0 and got[1] == 0.0
    assert np.isnan(got[2]) and np.isnan(got[3])
    assert got[4] == -1.0
    assert -1.0 <= got[5] <= 1.0
    assert row_cosine(clean[:0], perturbed[:0]).shape == (0,)


def test_row_cosine_no_overflow_with_large_float32() -> None:
    clean, perturbed = embedding_pairs(10, 768, np.float32, seed=4)
    got = row_cosine(clean * 1e18, perturbed * 1e18)  # squared norms overflow float32 sums
    np.testing.assert_allclose(got, reference_cosine(clean, perturbed), atol=1e-6)


def test_row_cosine_refuses_bad_input() -> None:
    a = np.zeros((3, 4), dtype=np.float16)
    with pytest.raises(ValueError, match=r"clean \(3, 4\) and perturbed \(2, 4\)"):
        row_cosine(a, a[:2])
    with pytest.raises(TypeError, match="float16 or float32"):
        row_cosine(a.astype(np.float64), a)
    with pytest.raises(ValueError, match="expected an \\(N, D\\)"):
        row_cosine(a[0], a[0])


@numba.njit
def _widen_all(bits: np.ndarray) -> np.ndarray:
    out = np.empty(bits.size, dtype=np.float32)
    for i in range(bits.size):
        out[i] = to_float32(bits[i])
    return out


@numba.njit
def _widen_all_portable(bits: np.ndarray) -> np.ndarray:
    out = np.empty(bits.size, dtype=np.float32)
    for i in range(bits.size):
        out[i] = half_bits_to_float32_portable(bits[i])
    return out


@pytest.mark.parametrize("widen", [_widen_all, _widen_all_portable], ids=["active", "portable"])
def test_float16_widening_is_exact_for_every_bit_pattern(widen: object) -> None:
    bits = np.arange(2**16, dtype=np.uint16)
    expected = bits.view(np.float16).astype(np.float32)
    got = widen(bits)  # type: ignore[operator]
    nan = np.isnan(expected)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], expected.view(np.uint32)[~nan])
    assert np.isnan(got[nan]).all()


def test_hardware_detection_matches_this_machine() -> None:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " f16c" in flags and os.environ.get("NUMBA_CPU_NAME") is None:
        assert half_module.HARDWARE_HALF


@pytest.mark.slow
def test_portable_path_under_a_generic_cpu_target() -> None:
    # NUMBA_CPU_NAME=generic disables F16C: the hardware path would crash the JIT there.
    script = textwrap.dedent(
        """
        import numpy as np
        from ubsafe.kernels import half, row_cosine
        assert not half.HARDWARE_HALF
        rng = np.random.default_rng(0)
        a = rng.standard_normal((200, 768)).astype(np.float16)
        b = (a + rng.standard_normal((200, 768))).astype(np.float16)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        ref = (a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)
        print(np.abs(row_cosine(a, b) - ref).max())
        """
    )
    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < 1e-5


def test_group_mean_matches_pandas_skipping_nan() -> None:
    rng = np.random.default_rng(5)
    group = rng.integers(0, 6, 5000)
    values = rng.random(5000).astype(np.float32)
    values[rng.random(5000) < 0.05] = np.nan
    values[group == 4] = np.nan  # a group of NaN only
    got = group_mean(group, values, n_groups=7)  # group 6 has no rows
    expected = pd.Series(values.astype(np.float64)).groupby(group).mean().reindex(range(7))
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=1e-12, equal_nan=True)
    assert np.isnan(got[4]) and np.isnan(got[6])


def test_group_mean_refuses_bad_groups() -> None:
    with pytest.raises(ValueError, match=r"row 1 has group 3, outside \[0, 2\)"):
        group_mean([0, 3], np.array([0.5, 0.5]), 2)


_WARM_UP_SCRIPT = textwrap.dedent(
    """
    import importlib, json
    from ubsafe.kernels import warm_up
    names = ("auroc", "bootstrap", "compare", "confusion", "mcnemar", "robustness")
    modules = [importlib.import_module(f"ubsafe.kernels.{name}") for name in names]
    warm_up()
    print(json.dumps({
        f"{module.__name__}.{attr}": len(getattr(module, attr).signatures)
        for module in modules for attr in dir(module)
        if attr.endswith("_kernel")
    }))
    """
)


def test_warm_up_compiles_every_kernel() -> None:
    # In a fresh process, so that no other test has compiled anything.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _WARM_UP_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    compiled = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(compiled) == 12, compiled
    assert all(n >= 1 for n in compiled.values()), compiled
    # float16 and float32 embeddings in either argument.
    assert compiled["ubsafe.kernels.compare._row_cosine_kernel"] == 4
