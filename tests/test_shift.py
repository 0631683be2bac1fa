"""Real-vs-AI distribution shift: the statistics against independent SciPy/NumPy computations, and
results/shift.csv written from the embedding cache of a planned run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist, pdist
from scipy.stats import bootstrap
from sklearn.decomposition import PCA

from ubsafe import embeddings as store
from ubsafe import shift
from ubsafe.config import RunConfig
from ubsafe.data.dataset import open_dataset
from ubsafe.rundir import Run, open_run
from ubsafe.stages.plan import assign_shards, write_plan
from ubsafe.taxonomy import CATEGORIES

KEY = "test-encoder-key"
DIM = 12


# --- independent references -----------------------------------------------------------------


def frechet_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The FID formula with SciPy's matrix square root."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = scipy.linalg.sqrtm(cov_a).real
    cross = scipy.linalg.sqrtm(root_a @ cov_b @ root_a).real
    return float(
        np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross)
    )


def mmd_reference(a: np.ndarray, b: np.ndarray, h: float, ids_a=None, ids_b=None) -> float:  # type: ignore[no-untyped-def]
    """Unbiased MMD² over pairs of distinct positions; with row ids, same-id pairs left out."""
    ids_a = np.arange(len(a)) if ids_a is None else ids_a
    ids_b = np.arange(len(b)) if ids_b is None else ids_b

    def k(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.exp(-cdist(x, y, "sqeuclidean") / (2 * h * h))

    keep_a = ids_a[:, None] != ids_a[None, :]
    keep_b = ids_b[:, None] != ids_b[None, :]
    return float(k(a, a)[keep_a].mean() + k(b, b)[keep_b].mean() - 2 * k(a, b).mean())


def two_sets(
    rng: np.random.Generator, n_a: int, n_b: int, dim: int, offset: float = 0.4
) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=(n_a, dim)) @ rng.normal(size=(dim, dim)) * 0.3
    b = rng.normal(size=(n_b, dim)) * 0.8
    b[:, 0] += offset
    return a, b


# --- the statistics -------------------------------------------------------------------------


@pytest.mark.parametrize(("n_a", "n_b", "dim"), [(80, 70, 6), (300, 250, 20), (25, 30, 40)])
def test_frechet_distance_matches_scipy_sqrtm(n_a: int, n_b: int, dim: int) -> None:
    a, b = two_sets(np.random.default_rng(dim), n_a, n_b, dim)
    assert shift.frechet_distance(a, b) == pytest.approx(
        frechet_reference(a, b), rel=1e-6, abs=1e-8
    )


def test_frechet_of_a_set_with_itself_is_zero_and_a_shift_shows() -> None:
    a, _ = two_sets(np.random.default_rng(0), 200, 10, 5)
    assert shift.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    moved = a + np.array([1.0, 0, 0, 0, 0])
    assert shift.frechet_distance(a, moved) == pytest.approx(1.0, rel=1e-9)


def test_frechet_on_a_resample_equals_frechet_of_the_repeated_rows() -> None:
    rng = np.random.default_rng(3)
    a, b = two_sets(rng, 40, 35, 8)
    count_a = shift.resample_counts(rng, len(a), 1)[0]
    count_b = shift.resample_counts(rng, len(b), 1)[0]
    repeated = frechet_reference(np.repeat(a, count_a, axis=0), np.repeat(b, count_b, axis=0))
    assert shift.frechet_from_counts(a, b, count_a, count_b) == pytest.approx(repeated, rel=1e-6)


def test_mmd_matches_the_unbiased_estimate() -> None:
    rng = np.random.default_rng(5)
    a, b = two_sets(rng, 50, 40, 7)
    h = 1.3
    assert shift.mmd(a, b, h) == pytest.approx(mmd_reference(a, b, h), rel=1e-9)
    same = shift.mmd(a[:25], a[25:], h)
    assert abs(same) < shift.mmd(a, b + 1.0, h)


def test_mmd_on_a_resample_leaves_out_pairs_of_copies() -> None:
    rng = np.random.default_rng(6)
    a, b = two_sets(rng, 30, 20, 5)
    count_a = shift.resample_counts(rng, len(a), 1)[0]
    count_b = shift.resample_counts(rng, len(b), 1)[0]
    ids_a, ids_b = np.repeat(np.arange(len(a)), count_a), np.repeat(np.arange(len(b)), count_b)
    expected = mmd_reference(a[ids_a], b[ids_b], 0.9, ids_a, ids_b)
    assert shift.mmd_from_counts(a, b, count_a, count_b, 0.9) == pytest.approx(expected, rel=1e-9)


def test_bandwidth_is_the_median_pairwise_distance() -> None:
    x = np.random.default_rng(8).normal(size=(120, 4))
    assert shift.median_bandwidth(x) == pytest.approx(float(np.median(pdist(x))))
    big = np.random.default_rng(9).normal(size=(600, 4))
    sampled = shift.median_bandwidth(big, max_rows=200, seed=1)
    assert sampled == shift.median_bandwidth(big, max_rows=200, seed=1)
    assert sampled == pytest.approx(float(np.median(pdist(big))), rel=0.1)


def _centred(value: float, distribution: np.ndarray) -> tuple[float, float]:
    q_lo, q_mid, q_hi = np.quantile(distribution, [0.025, 0.5, 0.975])
    return value - (q_mid - q_lo), value + (q_hi - q_mid)


def test_bootstrap_intervals_agree_with_scipy_bootstrap() -> None:
    """Same two-sample scheme through scipy.stats.bootstrap (its own draws): the ends agree within
    Monte Carlo error, and each interval holds its estimate."""
    rng = np.random.default_rng(11)
    a, b = two_sets(rng, 60, 50, 6, offset=0.6)
    h = shift.median_bandwidth(np.vstack([a, b]))
    ours = shift.bootstrap_shift(a, b, bandwidth=h, n_boot=600, seed=[1, 2], level=0.95)

    def frechet(ia: np.ndarray, ib: np.ndarray) -> float:
        return frechet_reference(a[ia.astype(int)], b[ib.astype(int)])

    def mmd(ia: np.ndarray, ib: np.ndarray) -> float:
        ia, ib = ia.astype(int), ib.astype(int)
        return mmd_reference(a[ia], b[ib], h, ia, ib)

    references = {
        "frechet": (frechet, frechet_reference(a, b)),
        "mmd": (mmd, mmd_reference(a, b, h)),
    }
    for metric, (statistic, value) in references.items():
        result = bootstrap(
            (np.arange(len(a)), np.arange(len(b))),
            statistic,
            vectorized=False,
            n_resamples=600,
            method="percentile",
            random_state=np.random.default_rng(7),
        )
        lo, hi = _centred(value, result.bootstrap_distribution)
        est = ours[metric]
        assert est.value == pytest.approx(value, rel=1e-6)
        width = hi - lo
        assert est.lo == pytest.approx(lo, abs=0.15 * width), metric
        assert est.hi == pytest.approx(hi, abs=0.15 * width), metric
        assert est.lo <= est.value <= est.hi


def test_bootstrap_is_reproducible_and_nan_below_two_rows() -> None:
    a, b = two_sets(np.random.default_rng(2), 30, 30, 4)
    first = shift.bootstrap_shift(a, b, bandwidth=1.0, n_boot=50, seed=[4, 5])
    again = shift.bootstrap_shift(a, b, bandwidth=1.0, n_boot=50, seed=[4, 5])
    other = shift.bootstrap_shift(a, b, bandwidth=1.0, n_boot=50, seed=[4, 6])
    assert (first["frechet"].lo, first["mmd"].hi) == (again["frechet"].lo, again["mmd"].hi)
    assert first["frechet"].lo != other["frechet"].lo
    lone = shift.bootstrap_shift(a[:1], b, bandwidth=1.0, n_boot=50, seed=0)
    assert all(np.isnan([e.value, e.lo, e.hi]).all() for e in lone.values())


# --- the run: cache in, shift.csv and projection.parquet out --------------------------------


def embedding_of(sample_id: str, category: str, source: str) -> np.ndarray:
    """A fixed vector per sample: a category centre, AI images moved along two axes, noise."""
    centre = np.random.default_rng(shift.stable_id(category)).normal(size=DIM)
    noise = np.random.default_rng(shift.stable_id(sample_id)).normal(size=DIM) * 0.7
    moved = np.zeros(DIM)
    if source == "ai":
        moved[:2] = 0.9
    return (centre + noise + moved) * (
        3.0 if source == "ai" else 1.0
    )  # norms differ: normalised away


def make_run(root: Path, dataset: Path, shard_size: int, skip: set[str] = frozenset()) -> Run:  # type: ignore[assignment]
    """Plan `dataset` and fill the embedding cache as the embed stage does (skipped ids listed)."""
    config = RunConfig(
        dataset=str(dataset),
        out=str(root),
        encoder="tiny",
        classifiers=(),
        shard_size=shard_size,
        seed=3,
        bootstrap=120,
    )
    run = open_run(root, config)
    data = open_dataset(dataset)
    write_plan(run.plan_path, assign_shards(data.table, shard_size), data, shard_size)
    run = Run.load(root)
    for shard in range(run.n_shards):
        rows = run.shard_plan(shard)
        kept = rows[~rows["sample_id"].isin(skip)]
        matrix = np.array(
            [
                embedding_of(s, c, k)
                for s, c, k in zip(
                    kept["sample_id"], kept["category"], kept["source_kind"], strict=True
                )
            ]
        )
        skipped = [(s, "truncated image") for s in rows["sample_id"] if s in skip]
        store.write_shard(
            store.shard_file(run, KEY, "clean", shard),
            store.expected(run, KEY, "clean", shard),
            list(kept["sample_id"]),
            matrix.reshape(-1, DIM),
            skipped,
            dtype="float32",
            identity={},
        )
    return run


def test_write_shift_matches_an_independent_computation(tmp_path: Path, demo_dir: Path) -> None:
    plan_ids = open_dataset(demo_dir).table.sort_values("sample_id")["sample_id"].tolist()
    skip = set(plan_ids[:3])
    run = make_run(tmp_path / "run", demo_dir, 50, skip)
    path = shift.write_shift(run, cache_key=KEY)
    assert path == run.results_dir / "shift.csv"
    table = pd.read_csv(path)
    assert list(table.columns) == list(shift.SHIFT_COLUMNS)
    assert list(table["category"].unique()) == [*CATEGORIES, "overall"]

    plan = run.plan[~run.plan["sample_id"].isin(skip)]
    vectors = {
        s: embedding_of(s, c, k)
        for s, c, k in zip(plan.sample_id, plan.category, plan.source_kind, strict=True)
    }

    def unit(ids: pd.Series) -> np.ndarray:
        x = np.array([vectors[s] for s in ids], dtype=np.float32).astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    h = float(np.median(pdist(unit(plan.sample_id))))
    for category in [*CATEGORIES, "overall"]:
        rows = plan if category == "overall" else plan[plan.category == category]
        real, ai = (
            unit(rows[rows.source_kind == "real"].sample_id),
            unit(rows[rows.source_kind == "ai"].sample_id),
        )
        got = table[table.category == category].set_index("metric")
        assert got.loc["frechet", "value"] == pytest.approx(frechet_reference(real, ai), rel=1e-6)
        assert got.loc["mmd", "value"] == pytest.approx(
            mmd_reference(real, ai, h), rel=1e-6, abs=1e-9
        )
        assert (got["n_real"] == len(real)).all() and (got["n_ai"] == len(ai)).all()
        assert (got["lo"] <= got["value"]).all() and (got["value"] <= got["hi"]).all()
    assert (table["encoder"] == "tiny").all()
    overall = table[table.category == "overall"].set_index("metric")
    assert overall.loc["mmd", "lo"] > 0, "a real shift is put in; its interval should exclude 0"

    projection = pd.read_parquet(run.results_dir / "projection.parquet")
    assert list(projection.columns) == list(shift.PROJECTION_COLUMNS)
    assert set(projection.sample_id) == set(plan.sample_id)
    ordered = projection.set_index("sample_id").loc[sorted(plan.sample_id)]
    reference = PCA(n_components=2).fit_transform(unit(pd.Series(sorted(plan.sample_id))))
    for axis, column in enumerate(("x", "y")):
        sign = np.sign(reference[:, axis] @ ordered[column].to_numpy())
        np.testing.assert_allclose(ordered[column].to_numpy(), sign * reference[:, axis], atol=1e-8)
    kinds = plan.set_index("sample_id").loc[ordered.index, "source_kind"]
    assert (ordered["source"] == kinds).all()


def test_shift_is_the_same_for_any_shard_layout(tmp_path: Path, demo_dir: Path) -> None:
    few = shift.write_shift(make_run(tmp_path / "few", demo_dir, 200), cache_key=KEY)
    many = shift.write_shift(make_run(tmp_path / "many", demo_dir, 17), cache_key=KEY)
    assert few is not None and many is not None
    assert few.read_bytes() == many.read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(few.parent / "projection.parquet"),
        pd.read_parquet(many.parent / "projection.parquet"),
    )


def test_no_shift_without_both_sources(tmp_path: Path) -> None:
    from conftest import write_unsafebench

    rows = [
        {
            "safety_label": "Unsafe" if i % 3 else "Safe",
            "category": CATEGORIES[i % 11],
            "source": "Laion5B",
        }
        for i in range(24)
    ]
    dataset = write_unsafebench(tmp_path / "real-only", {"train": rows})
    run = make_run(tmp_path / "run", dataset, 10)
    assert shift.write_shift(run, cache_key=KEY) is None
    assert not (run.results_dir / "shift.csv").exists()


def test_a_missing_shard_is_named_not_read_as_zeros(tmp_path: Path, demo_dir: Path) -> None:
    run = make_run(tmp_path / "run", demo_dir, 50)
    store.shard_file(run, KEY, "clean", 1).unlink()
    with pytest.raises(store.IncompleteEmbeddings, match="shard 1"):
        shift.write_shift(run, cache_key=KEY)
    assert not (run.results_dir / "shift.csv").exists()
