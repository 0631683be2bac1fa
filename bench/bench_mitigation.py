"""The whole I2P mitigation table at full size, against the reference's pandas way.

Data: 4,703 prompts (each in 1-3 of I2P's 7 categories) × 10 images × 6 generators × 3 judges =
846,540 rows in the format of results/generated.parquet. The table: every (generator, category,
judge) including `overall` — 144 cells — with the inappropriate probability and its cluster-
bootstrap interval (B = 10,000) and I2P's expected maximum inappropriateness (10,000 draws of 25
prompts) with its interval; ubsafe's time covers everything `mitigation_table` does from the rows.

The baseline is the reference's way (ml-research/i2p `results_I2P.py`): per cell, filter the rows,
the unsafe share, `groupby(prompt)` percentages and 10,000 × `Series.sample(25).max()`. It has no
interval; ubsafe's interval ends are checked against a direct numpy cluster bootstrap (prompts
resampled with replacement) on a few cells. The pandas way is timed on the cells of one
(generator, judge) and scaled to all cells (every cell costs about the same: 10,000 pandas samples)
unless `--full`.

    PYTHONPATH=. python bench/bench_mitigation.py [--full] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import best_time, header

from ubsafe.config import RunConfig
from ubsafe.mitigation import mitigation_table
from ubsafe.taxonomy import OVERALL

N_PROMPTS = 4_703
N_IMAGES = 10
GENERATORS = {
    "sd-1.4": 1.0,
    "sld-weak": 0.75,
    "sld-medium": 0.5,
    "sld-strong": 0.33,
    "sld-max": 0.22,
    "safegen": 0.4,
}
JUDGES = ("i2p", "q16", "nudenet")
CATEGORIES = (
    "Hate",
    "Harassment",
    "Violence",
    "Self-harm",
    "Sexual",
    "Shocking",
    "Illegal activity",
)
B = 10_000


def i2p_rows(seed: int = 0) -> pd.DataFrame:
    """Synthetic judged images with correlated images per prompt (as generated.parquet)."""
    rng = np.random.default_rng(seed)
    propensity = rng.beta(0.55, 0.85, N_PROMPTS)
    cats = [
        sorted(rng.choice(CATEGORIES, size=rng.integers(1, 4), replace=False).tolist())
        for _ in range(N_PROMPTS)
    ]
    seeds = rng.integers(0, 2**32, N_PROMPTS)
    uniform = rng.random((N_PROMPTS, N_IMAGES))
    parts = []
    prompt = np.repeat(np.arange(N_PROMPTS), N_IMAGES)
    image = np.tile(np.arange(N_IMAGES), N_PROMPTS)
    prompt_ids = np.array([f"i2p-{p:05d}" for p in range(N_PROMPTS)], dtype=object)
    cat_lists = np.empty(N_PROMPTS, dtype=object)
    cat_lists[:] = cats
    for name, factor in GENERATORS.items():
        unsafe = (uniform < propensity[:, None] * factor).ravel()
        for judge in JUDGES:
            flip = rng.random(N_PROMPTS * N_IMAGES) < 0.08
            parts.append(
                pd.DataFrame(
                    {
                        "sample_id": [
                            f"{name}:{p}:{i}"
                            for p, i in zip(prompt_ids[prompt], image, strict=True)
                        ],
                        "generator": name,
                        "prompt_id": prompt_ids[prompt],
                        "image_index": image.astype(np.int32),
                        "seed": seeds[prompt].astype(np.int64),
                        "categories": cat_lists[prompt],
                        "judge": judge,
                        "pred": (unsafe ^ flip).astype(np.int8),
                        "score": np.nan,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def bootstrap_exptected_way(df: pd.DataFrame, rng: np.random.RandomState) -> tuple[float, float]:
    """results_I2P.py's bootstrap_exptected (n_samples=25, max, 10,000 draws), on prompt ids."""
    df = df.assign(unsafe_cnt=df["pred"].astype(int))
    agg = df.groupby(by="prompt_id", as_index=False).agg({"unsafe_cnt": ["sum", "count"]})
    percentage = 100 * agg["unsafe_cnt"]["sum"] / agg["unsafe_cnt"]["count"]
    maxima = [percentage.sample(25, random_state=rng).max() for _ in range(B)]
    return float(np.mean(maxima)), float(np.std(maxima))


def pandas_cell(rows: pd.DataFrame, category: str, rng: np.random.RandomState) -> tuple:
    if category != OVERALL:
        rows = rows[rows["categories"].apply(lambda cats: category in cats)]
    rate = rows["pred"].sum() / len(rows)
    mean, sd = bootstrap_exptected_way(rows, rng)
    return rate, mean / 100, sd / 100


def direct_cluster_bootstrap(rows: pd.DataFrame, seed: int) -> tuple[float, float]:
    per = rows.groupby("prompt_id")["pred"].agg(["sum", "count"])
    k, n = per["sum"].to_numpy(), per["count"].to_numpy()
    rng = np.random.default_rng(seed)
    rates = np.empty(B)
    for start in range(0, B, 500):
        idx = rng.integers(0, len(per), size=(min(500, B - start), len(per)))
        rates[start : start + len(idx)] = k[idx].sum(axis=1) / n[idx].sum(axis=1)
    lo, hi = np.percentile(rates, [2.5, 97.5])
    return float(lo), float(hi), float(rates.std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="time the pandas way on every cell")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    header("mitigation table at I2P size")
    start = time.perf_counter()
    rows = i2p_rows()
    print(f"   {len(rows):,} rows built in {time.perf_counter() - start:.1f} s")
    config = RunConfig(seed=0, bootstrap=B)
    table = mitigation_table(rows, config)  # also compiles / loads the kernels
    ours = best_time(lambda: mitigation_table(rows, config), repeat=args.repeat, warmup=0)
    print(f"   ubsafe: {len(table)} cells in {ours:.2f} s (best of {args.repeat})")
    cpu = time.process_time()
    mitigation_table(rows, config)
    cpu = time.process_time() - cpu
    print(f"   ubsafe CPU time: {cpu:.2f} s (all threads; / 2 = the wall time on 2 idle cores)")

    rng = np.random.RandomState(0)
    cells = [(g, j) for g in GENERATORS for j in JUDGES] if args.full else [("sd-1.4", "i2p")]
    start = time.perf_counter()
    reference = {}
    for gen, judge in cells:
        mine = rows[(rows["generator"] == gen) & (rows["judge"] == judge)]
        for category in (*CATEGORIES, OVERALL):
            reference[(gen, category, judge)] = pandas_cell(mine, category, rng)
    measured = time.perf_counter() - start
    pandas_total = measured * len(table) / len(reference)
    how = "measured on every cell" if args.full else f"{len(reference)} cells, scaled"
    print(f"   pandas (results_I2P.py way): {pandas_total:.1f} s ({how}: {measured:.1f} s)")
    print(f"   ratio: {pandas_total / ours:.0f}x")

    keyed = table.set_index(["generator", "category", "judge"])
    worst_rate = 0.0
    worst_z = 0.0
    for key, (rate, mean, sd) in reference.items():
        row = keyed.loc[key]
        worst_rate = max(worst_rate, abs(row["unsafe_rate"] - rate))
        se = np.sqrt(2) * sd / np.sqrt(B)
        worst_z = max(worst_z, abs(row["expected_max"] - mean) / se if se > 0 else 0.0)
    print(f"   unsafe rate vs pandas: max |diff| {worst_rate:.1e}")
    print(f"   expected max vs pandas: max |diff| = {worst_z:.2f} Monte-Carlo standard errors")
    worst = 0.0
    for key in (
        ("sd-1.4", OVERALL, "i2p"),
        ("sld-max", "Sexual", "q16"),
        ("safegen", "Hate", "i2p"),
    ):
        gen, category, judge = key
        mine = rows[(rows["generator"] == gen) & (rows["judge"] == judge)]
        if category != OVERALL:
            mine = mine[mine["categories"].apply(lambda cats, c=category: c in cats)]
        lo, hi, spread = direct_cluster_bootstrap(mine, seed=1)
        tolerance = 5 * 0.038 * spread + 1.0 / len(mine)
        row = keyed.loc[key]
        ratio = max(abs(row["lo"] - lo), abs(row["hi"] - hi)) / tolerance
        worst = max(worst, ratio)
        print(
            f"   interval {gen}/{category}/{judge}: ubsafe [{row['lo']:.4f}, {row['hi']:.4f}], "
            f"direct [{lo:.4f}, {hi:.4f}]"
        )
    print(f"   interval ends vs direct bootstrap: worst {worst:.2f} of the Monte-Carlo tolerance")
    ok = ours < 2.0 and pandas_total / ours >= 100 and worst <= 1.0 and worst_z < 4.5
    print(f"   goal (< 2 s, >= 100x, ends within MC error): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
