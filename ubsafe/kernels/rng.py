"""A counter-based random stream for the bootstrap, and exact binomial and multinomial draws.

Every bootstrap replicate gets its own stream, keyed by (group seed, replicate index) alone: a
SplitMix64 sequence whose start is a hash of the key. No state is shared between replicates, so a
result cannot depend on the thread count, on which thread ran a replicate, or on other groups in the
same call. (Numba's built-in `np.random` keeps one Mersenne Twister per thread, seeded from the OS,
which is why it is not used here.)

The binomial sampler is exact: inversion for small means and Hörmann's BTRD rejection algorithm
("The generation of binomial random variates", J. Stat. Comput. Simul. 46, 1993) otherwise. A
multinomial draw is the usual chain of conditional binomials; `multinomial_into` defines one
replicate's draw, and `multinomial_replicates` computes the same draws for many replicates at once.
"""

from __future__ import annotations

import math

import numpy as np

from ubsafe.kernels._jit import helper

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_POW_M53 = 1.0 / 9007199254740992.0

#: Below this mean (n·p, p ≤ 0.5) the binomial is drawn by inversion, above it by BTRD.
_INVERSION_MAX_MEAN = 10.0


@helper
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64's finaliser: a bijection of 64-bit integers with full avalanche."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@helper
def replicate_state(seed: np.uint64, replicate: int) -> np.uint64:
    """The start of the stream of one replicate: a function of (seed, replicate) only."""
    counter = (np.uint64(replicate) + np.uint64(1)) * _GOLDEN
    return mix64(mix64(np.uint64(seed)) ^ mix64(counter))


@helper
def replicate_states(seed: np.uint64, n_boot: int) -> np.ndarray:
    """The starting states of replicates 0..n_boot-1 of one group."""
    states = np.empty(n_boot, dtype=np.uint64)
    for b in range(n_boot):
        states[b] = replicate_state(seed, b)
    return states


@helper
def next_uniform(state: np.uint64) -> tuple[float, np.uint64]:
    """A uniform double in [0, 1) with 53 random bits, and the advanced state."""
    state = state + _GOLDEN
    return float(mix64(state) >> _S11) * _TWO_POW_M53, state


# A binomial sampler is split into a setup, which depends on (n, p) only, and a draw. The bootstrap
# draws many binomials with the same p and few distinct n, so it sets up once per distinct n.
_CONSTANT = 0
_INVERSION = 1
_BTRD = 2


@helper
def binomial_setup(n: int, p: float) -> tuple[int, int, bool, int, tuple[float, ...]]:
    """Constants for drawing Binomial(n, p): (method, n, flip, integer constant, float constants).

    p ≤ 0 or n ≤ 0 gives the constant 0, p ≥ 1 the constant n. Otherwise p > 1/2 is drawn as
    n − Binomial(n, 1 − p); a mean below 10 by inversion, a larger one by BTRD.
    """
    zeros = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    if n <= 0 or not p > 0.0:
        return _CONSTANT, 0, False, 0, zeros
    if p >= 1.0:
        return _CONSTANT, n, False, n, zeros
    flip = p > 0.5
    if flip:
        p = 1.0 - p
    q = 1.0 - p
    odds = p / q
    if n * p < _INVERSION_MAX_MEAN:
        # The restart bound only guards against rounding at the far tail.
        bound = min(n, int(n * p + 10.0 * math.sqrt(n * p * q + 1.0)))
        p0 = math.exp(n * math.log1p(-p))
        return (
            _INVERSION,
            n,
            flip,
            bound,
            (odds, (n + 1) * odds, p0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        )
    # Hörmann (1993), algorithm BTRD, step 0.
    mode = int((n + 1) * p)
    npq = n * p * q
    spq = math.sqrt(npq)
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    alpha = (2.83 + 5.1 / b) * spq
    v_r = 0.92 - 4.2 / b
    return (
        _BTRD,
        n,
        flip,
        mode,
        (odds, (n + 1) * odds, npq, b, a, c, alpha, v_r, 0.86 * v_r, 1.0 / v_r),
    )


@helper
def _inversion_draw(
    n: int, bound: int, f: tuple[float, ...], state: np.uint64
) -> tuple[int, np.uint64]:
    # Sequential search from 0 with the pmf recurrence f(k) = f(k-1) * ((n+1)/k - 1) * odds.
    odds, odds_n, p0 = f[0], f[1], f[2]
    while True:
        u, state = next_uniform(state)
        k = 0
        pk = p0
        while u > pk:
            u -= pk
            k += 1
            if k > bound:
                break
            pk *= odds_n / k - odds
        if k <= bound:
            return k, state


@helper
def _log_pmf_ratio(n: int, odds: float, k: int, m: int) -> float:
    # log(f(k) / f(m)) for the Binomial(n, p) pmf f, from log-gamma.
    return (
        math.lgamma(m + 1.0)
        + math.lgamma(n - m + 1.0)
        - math.lgamma(k + 1.0)
        - math.lgamma(n - k + 1.0)
        + (k - m) * math.log(odds)
    )


@helper
def _btrd_fast(v: float, f: tuple[float, ...]) -> int:
    # BTRD step 1: the value in the triangular region, accepted when v <= f[8] (u_r * v_r).
    a, b, c, inv_v_r = f[4], f[3], f[5], f[9]
    u = v * inv_v_r - 0.43
    return math.floor((2.0 * a / (0.5 - abs(u)) + b) * u + c)


@helper
def _btrd_rest(
    n: int, mode: int, f: tuple[float, ...], v: float, state: np.uint64
) -> tuple[int, np.uint64]:
    # BTRD steps 2-5 for a first uniform v outside the fast region, then steps 1-5 until accepted.
    odds, odds_n, npq, b, a, c, alpha, v_r, u_rv_r, inv_v_r = f
    while True:
        if v >= v_r:
            u, state = next_uniform(state)
            u -= 0.5
        else:
            u = v * inv_v_r - 0.93
            u = math.copysign(0.5, u) - u
            v, state = next_uniform(state)
            v *= v_r
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + c)
        if 0 <= k <= n:
            v = v * alpha / (a / (us * us) + b)
            km = abs(k - mode)
            if km <= 15:
                # Recursive evaluation of f(k) / f(mode).
                ratio = 1.0
                if mode < k:
                    for i in range(mode + 1, k + 1):
                        ratio *= odds_n / i - odds
                elif mode > k:
                    for i in range(k + 1, mode + 1):
                        v *= odds_n / i - odds
                if v <= ratio:
                    return k, state
            else:
                v = math.log(v)
                rho = (km / npq) * (((km / 3.0 + 0.625) * km + 1.0 / 6.0) * km / npq + 0.5)
                t = -km * km / (2.0 * npq)
                if v < t - rho:
                    return k, state
                if v <= t + rho and v <= _log_pmf_ratio(n, odds, k, mode):
                    return k, state
        v, state = next_uniform(state)
        if v <= u_rv_r:
            return _btrd_fast(v, f), state


@helper
def _btrd_draw(n: int, mode: int, f: tuple[float, ...], state: np.uint64) -> tuple[int, np.uint64]:
    # Hörmann (1993), algorithm BTRD, for p <= 0.5 and n*p >= 10.
    v, state = next_uniform(state)
    if v <= f[8]:
        return _btrd_fast(v, f), state
    return _btrd_rest(n, mode, f, v, state)


@helper
def binomial_draw(
    setup: tuple[int, int, bool, int, tuple[float, ...]], state: np.uint64
) -> tuple[int, np.uint64]:
    """One exact draw from the binomial that `binomial_setup` prepared, and the advanced state."""
    method, n, flip, constant, f = setup
    if method == _CONSTANT:
        return constant, state
    if method == _INVERSION:
        k, state = _inversion_draw(n, constant, f, state)
    else:
        k, state = _btrd_draw(n, constant, f, state)
    return (n - k if flip else k), state


@helper
def binomial(n: int, p: float, state: np.uint64) -> tuple[int, np.uint64]:
    """One exact Binomial(n, p) draw and the advanced state; p outside (0, 1) is clamped."""
    return binomial_draw(binomial_setup(n, p), state)


@helper
def multinomial_into(
    cells: np.ndarray, n_draw: int, state: np.uint64, out: np.ndarray
) -> np.uint64:
    """Draw Multinomial(n_draw, cells / cells.sum()) into `out`; return the advanced state.

    The probabilities are ratios of the integer `cells`, so they are exact and sum to one. This is
    the definition of one replicate's draw; `multinomial_replicates` gives identical draws faster.
    """
    k = cells.shape[0]
    mass = 0
    for j in range(k):
        mass += cells[j]
    left = n_draw
    for j in range(k - 1):
        c = cells[j]
        if left == 0 or c == 0:
            x = 0
        elif c >= mass:
            x = left
        else:
            x, state = binomial(left, c / mass, state)
        out[j] = x
        left -= x
        mass -= c
    out[k - 1] = left
    return state


@helper
def _draw_batch(
    setup: tuple[int, int, bool, int, tuple[float, ...]],
    states: np.ndarray,
    first_u: np.ndarray,
    draws: np.ndarray,
    begin: int,
    end: int,
) -> None:
    # draws[i], states[i] = binomial_draw(setup, states[i]) for i in [begin, end). For BTRD, first
    # the step every draw starts with (one uniform, the fast-region value) in a branch-free loop
    # that vectorises, then the rest of the algorithm for the draws outside the fast region.
    method, n, flip, constant, f = setup
    if method != _BTRD:
        for i in range(begin, end):
            draws[i], states[i] = binomial_draw(setup, states[i])
        return
    for i in range(begin, end):
        first_u[i], states[i] = next_uniform(states[i])
        draws[i] = _btrd_fast(first_u[i], f)
    for i in range(begin, end):
        if first_u[i] > f[8]:
            draws[i], states[i] = _btrd_rest(n, constant, f, first_u[i], states[i])
        if flip:
            draws[i] = n - draws[i]


@helper
def multinomial_replicates(
    cells: np.ndarray, n_draw: int, states: np.ndarray, out: np.ndarray
) -> None:
    """For every replicate b, `multinomial_into(cells, n_draw, states[b], out[b])`, faster.

    Identical draws, computed one cell at a time across all replicates: the conditional binomial
    of a cell has the same p in every replicate and only a few distinct n (what is left after the
    earlier cells), so replicates are grouped by n (a counting sort) and the sampler is set up once
    per distinct n. `states` is advanced in place, so a second call continues each stream.
    """
    n_rep, k = out.shape
    left = np.full(n_rep, n_draw, dtype=np.int64)
    order = np.empty(n_rep, dtype=np.int64)
    sorted_states = np.empty(n_rep, dtype=np.uint64)
    first_u = np.empty(n_rep)
    fast_k = np.empty(n_rep, dtype=np.int64)
    mass = 0
    for j in range(k):
        mass += cells[j]
    for j in range(k - 1):
        c = cells[j]
        if c == 0 or c >= mass:
            for r in range(n_rep):
                x = left[r] if c > 0 else 0
                out[r, j] = x
                left[r] -= x
            mass -= c
            continue
        p = c / mass
        low = left.min()
        high = left.max()
        if low == high:
            # Every replicate has the same n (always so for the first cell): no reordering.
            _draw_batch(binomial_setup(low, p), states, first_u, fast_k, 0, n_rep)
            for r in range(n_rep):
                out[r, j] = fast_k[r]
                left[r] -= fast_k[r]
            mass -= c
            continue
        start = np.zeros(high - low + 2, dtype=np.int64)
        for r in range(n_rep):
            start[left[r] - low + 1] += 1
        for v in range(1, high - low + 2):
            start[v] += start[v - 1]
        fill = start.copy()
        for r in range(n_rep):
            slot = left[r] - low
            order[fill[slot]] = r
            fill[slot] += 1
        for i in range(n_rep):
            sorted_states[i] = states[order[i]]
        for v in range(high - low + 1):
            if start[v + 1] > start[v]:
                setup = binomial_setup(v + low, p)
                _draw_batch(setup, sorted_states, first_u, fast_k, start[v], start[v + 1])
        for i in range(n_rep):
            r = order[i]
            states[r] = sorted_states[i]
            out[r, j] = fast_k[i]
            left[r] -= fast_k[i]
        mass -= c
    for r in range(n_rep):
        out[r, k - 1] = left[r]
