"""The bootstrap's random stream: keyed per replicate, and exact binomial/multinomial draws."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy import stats

from ubsafe.kernels.rng import (
    binomial,
    multinomial_into,
    multinomial_replicates,
    next_uniform,
    replicate_state,
    replicate_states,
)

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def splitmix_mix(z: int) -> int:
    # SplitMix64's finaliser, written from Steele, Lea & Flood (OOPSLA 2014) / Vigna's reference C.
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


@numba.njit
def _uniforms(seed: np.uint64, replicate: int, size: int) -> np.ndarray:
    out = np.empty(size)
    state = replicate_state(seed, replicate)
    for i in range(size):
        out[i], state = next_uniform(state)
    return out


@numba.njit
def _binomials(n: int, p: float, seed: np.uint64, size: int) -> np.ndarray:
    out = np.empty(size, dtype=np.int64)
    for b in range(size):
        out[b], _ = binomial(n, p, replicate_state(seed, b))
    return out


@numba.njit
def _multinomials(cells: np.ndarray, n_draw: int, seed: np.uint64, size: int) -> np.ndarray:
    out = np.empty((size, cells.shape[0]), dtype=np.int64)
    for b in range(size):
        multinomial_into(cells, n_draw, replicate_state(seed, b), out[b])
    return out


def test_stream_is_splitmix64_started_from_a_hash_of_seed_and_replicate() -> None:
    seed, replicate = 2**63 + 12345, 77
    state = splitmix_mix(splitmix_mix(seed) ^ splitmix_mix(((replicate + 1) * GOLDEN) & MASK))
    expected = []
    for _ in range(5):
        state = (state + GOLDEN) & MASK
        expected.append((splitmix_mix(state) >> 11) / 2.0**53)
    got = _uniforms(np.uint64(seed), replicate, 5)
    np.testing.assert_array_equal(got, expected)


def test_streams_differ_between_replicates_and_seeds() -> None:
    first = _uniforms(np.uint64(1), 0, 4)
    assert not np.array_equal(first, _uniforms(np.uint64(1), 1, 4))
    assert not np.array_equal(first, _uniforms(np.uint64(2), 0, 4))
    np.testing.assert_array_equal(first, _uniforms(np.uint64(1), 0, 4))


def test_uniforms_are_uniform() -> None:
    u = np.concatenate([_uniforms(np.uint64(9), b, 50) for b in range(2000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3


@pytest.mark.parametrize(
    ("n", "p"),
    [
        (1, 0.5),
        (7, 0.3),  # inversion
        (30, 0.34),  # BTRD just above the switch (n·p = 10.2)
        (25, 0.45),
        (400, 0.2),
        (10_000, 0.4),
        (1_000_000, 0.01),
        (60, 0.9),  # p > 1/2 by symmetry, inversion
        (10_000, 0.97),  # p > 1/2 by symmetry, BTRD
    ],
)
def test_binomial_matches_scipy_pmf(n: int, p: float) -> None:
    size = 200_000
    x = _binomials(n, p, np.uint64(20240601), size)
    assert x.min() >= 0 and x.max() <= n
    support = np.arange(n + 1)
    expected = stats.binom.pmf(support, n, p) * size
    observed = np.bincount(x, minlength=n + 1)
    # Pool the thin tails so that every bin expects at least 20 draws.
    keep = expected >= 20
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    if exp[-1] < 20:
        obs, exp = obs[:-1], exp[:-1]
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4
    assert abs(x.mean() - n * p) < 5 * np.sqrt(n * p * (1 - p) / size)


@pytest.mark.parametrize(("n", "p", "value"), [(0, 0.3, 0), (12, 0.0, 0), (12, 1.0, 12)])
def test_binomial_degenerate_cases(n: int, p: float, value: int) -> None:
    assert set(_binomials(n, p, np.uint64(1), 100).tolist()) == {value}


def test_multinomial_has_multinomial_moments() -> None:
    cells = np.array([50, 0, 300, 650], dtype=np.int64)
    n = int(cells.sum())
    draws = _multinomials(cells, n, np.uint64(5), 100_000)
    assert (draws.sum(axis=1) == n).all()
    assert (draws[:, 1] == 0).all()  # an empty cell stays empty
    p = cells / n
    np.testing.assert_allclose(draws.mean(axis=0), n * p, atol=0.05 * np.sqrt(n))
    expected_cov = n * (np.diag(p) - np.outer(p, p))
    np.testing.assert_allclose(np.cov(draws.T), expected_cov, rtol=0.03, atol=0.5)


def test_multinomial_of_one_full_cell_is_constant() -> None:
    cells = np.array([0, 0, 0, 40], dtype=np.int64)
    draws = _multinomials(cells, 40, np.uint64(5), 50)
    assert (draws == cells).all()


@numba.njit
def _two_samples_one_by_one(cells_a, cells_b, seed, size):  # type: ignore[no-untyped-def]
    out_a = np.empty((size, cells_a.shape[0]), dtype=np.int64)
    out_b = np.empty((size, cells_b.shape[0]), dtype=np.int64)
    for b in range(size):
        state = multinomial_into(cells_a, cells_a.sum(), replicate_state(seed, b), out_a[b])
        multinomial_into(cells_b, cells_b.sum(), state, out_b[b])
    return out_a, out_b


@numba.njit
def _two_samples_cell_major(cells_a, cells_b, seed, size):  # type: ignore[no-untyped-def]
    states = replicate_states(seed, size)
    out_a = np.empty((size, cells_a.shape[0]), dtype=np.int64)
    out_b = np.empty((size, cells_b.shape[0]), dtype=np.int64)
    multinomial_replicates(cells_a, cells_a.sum(), states, out_a)
    multinomial_replicates(cells_b, cells_b.sum(), states, out_b)
    return out_a, out_b


@pytest.mark.parametrize(
    "cells",
    [
        [3000, 450, 700, 5800],  # BTRD at every step
        [12, 3, 0, 40],  # inversion, an empty cell
        [0, 0, 25, 0],  # one full cell
        [1, 2000, 1, 3, 5, 0, 900, 77],  # 8 joint cells
    ],
)
def test_cell_major_draws_equal_replicate_by_replicate_draws(cells: list[int]) -> None:
    # The fast path must be the same function of (seed, replicate), streams continuing across
    # calls as in a two-sample replicate.
    a = np.array(cells, dtype=np.int64)
    b = a[::-1].copy()
    fast = _two_samples_cell_major(a, b, np.uint64(31337), 3000)
    slow = _two_samples_one_by_one(a, b, np.uint64(31337), 3000)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
