"""Benign fidelity of text-to-image generators: CLIP score per generator and against the baseline.

CLIP score of an image = 100 × cosine(image embedding, text embedding of its prompt), both from the
run's encoder (its open_clip weights: the image embedding from the embedding cache, the text from
the same model's text tower). It is computed on the benign prompts of the run (prompts without a
category), averaged over images, with a cluster-bootstrap interval over prompts; the difference to
the baseline generator is paired on (prompt, seed, image index).

FID and KID compare each generator's benign images with the baseline generator's images of the
same prompts, on the pool3 features of the FID Inception network (`ubsafe.inception`): FID is the
Fréchet distance of the two feature Gaussians, KID the unbiased MMD² with the cubic polynomial
kernel, averaged over random subsets (Bińkowski et al. 2018). They need the Inception weights in
the weights directory (`ubsafe weights fetch`); without them fidelity.csv says so in `note`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ubsafe.results import result_file

if TYPE_CHECKING:
    from ubsafe.kernels.cluster import RatioTable
    from ubsafe.rundir import Run

log = logging.getLogger(__name__)

FIDELITY_COLUMNS = result_file("fidelity.csv").names

FID_NOTE = (
    "FID/KID not computed: the Inception weights are not in the weights directory "
    "(`ubsafe weights fetch --to DIR` downloads them)"
)
#: KID subsets and their size (the KID paper's choice; the size is cut to the smaller set)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets (rows): |mu_a - mu_b|² + Tr(S_a + S_b - 2 (S_a S_b)^½)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # singular product: shift both covariances slightly
        shift = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + shift) @ (cov_b + shift))
    root = np.real(root)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def kernel_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² of two equal-size sets with k(x, y) = (x·y / d + 1)³."""
    m, d = len(a), a.shape[1]
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within - 2 * k_ab.mean())


def kid(
    a: np.ndarray,
    b: np.ndarray,
    seed: int,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
) -> float:
    """KID: the mean of `kernel_mmd2` over `subsets` random subsets of each set (drawn without
    replacement, `subset_size` cut to the smaller set)."""
    size = min(subset_size, len(a), len(b))
    if size < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    values = [
        kernel_mmd2(
            a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values))


def benign_images(generated: pd.DataFrame) -> pd.DataFrame:
    """One row per generated image of a prompt without categories."""
    images = generated.drop_duplicates("sample_id")
    empty = images["categories"].apply(lambda cats: cats is None or len(cats) == 0)
    return images[empty.to_numpy(bool)].sort_values("sample_id", kind="stable")


def prompt_texts(run: Run, generated: pd.DataFrame, prompt_ids: list[str]) -> dict[str, str] | None:
    """Prompt text per id: generated.parquet's `prompt` column when it has one, else the `text`
    column of the run's generate shards (the prompt each image was made from)."""
    if "prompt" in generated.columns:
        rows = generated.drop_duplicates("prompt_id").set_index("prompt_id")["prompt"]
        return {p: str(rows[p]) for p in prompt_ids if p in rows.index}
    import pyarrow.parquet as pq

    wanted = set(prompt_ids)
    texts: dict[str, str] = {}
    for path in sorted((run.root / "shards" / "generate").glob("shard-*.parquet")):
        try:
            frame = pq.read_table(path, columns=["prompt_id", "text"]).to_pandas()
        except (OSError, ValueError, KeyError):
            continue
        for prompt_id, text in zip(frame["prompt_id"], frame["text"], strict=True):
            if prompt_id in wanted:
                texts.setdefault(str(prompt_id), str(text))
    return texts or None


def cached_image_embeddings(run: Run, sample_ids: set[str]) -> dict[str, np.ndarray]:
    """Clean embeddings of `sample_ids` by the run's encoder, from the run's embedding cache.

    Only the run's own shard files count (`ubsafe.embeddings`: the plan's fingerprint and shard
    size, complete and checked), so a cache shared with other runs never lends another run's
    images. A run without a plan, or shards not embedded, give nothing for their images.
    """
    from ubsafe import embeddings as store
    from ubsafe.encoders.identity import cache_key

    found: dict[str, np.ndarray] = {}
    if not run.plan_path.is_file():
        return found
    key = cache_key(run.config.encoder, run.config.precision)
    plan = run.plan
    wanted = plan[plan["sample_id"].isin(sample_ids)]
    for shard in sorted({int(s) for s in wanted["shard"]}):
        if not store.is_complete(run, key, "clean", shard):
            continue
        part = store.read_shard(run, key, "clean", shard)
        for sample_id, row in zip(part.sample_ids, part.embeddings, strict=True):
            if sample_id in sample_ids:
                found[str(sample_id)] = np.asarray(row, dtype=np.float64)
    return found


def clip_scores(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """100 × cosine of matching rows (float64)."""
    a = image / np.linalg.norm(image, axis=1, keepdims=True)
    b = text / np.linalg.norm(text, axis=1, keepdims=True)
    return 100.0 * np.sum(a * b, axis=1)


def _empty(generators: list[str], baseline: str, note: str) -> pd.DataFrame:
    frame = pd.DataFrame({"generator": generators})
    for column in FIDELITY_COLUMNS[1:]:
        frame[column] = np.nan
    frame["baseline"] = baseline
    frame["n_prompts"] = 0
    frame["n_images"] = 0
    frame["note"] = note
    return frame[list(FIDELITY_COLUMNS)]


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def image_features(run: Run, sample_ids: list[str], net: object) -> dict[str, np.ndarray]:
    """Pool3 features of the run's images `sample_ids` (those that decode)."""
    from ubsafe.data.images import DecodeError, decode_image
    from ubsafe.inception import features
    from ubsafe.stages import common

    plan = run.plan
    rows = plan[plan["sample_id"].isin(set(sample_ids))].sort_values("sample_id", kind="stable")
    ids, images = [], []
    for sample_id, data, _reason in common.image_bytes(run, rows):
        if data is None:
            continue
        try:
            images.append(decode_image(data))
        except DecodeError:
            continue
        ids.append(str(sample_id))
    found = features(net, images)
    return {s: found[i] for i, s in enumerate(ids)}


def inception_scores(
    run: Run, images: pd.DataFrame, generators: list[str], baseline: str
) -> tuple[dict[str, float], dict[str, float], str]:
    """(FID per generator, KID per generator, note): each generator's benign images against the
    baseline's images of the same prompts; nothing, with a note, without the weights."""
    from ubsafe import inception
    from ubsafe.kernels import group_seed

    path = inception.WEIGHTS.local_path(run.config.weights_dir)
    if not path.is_file():
        return {}, {}, FID_NOTE
    if images.empty or baseline not in set(images["generator"]):
        return {}, {}, "FID/KID not computed: no benign images of the baseline generator"
    from ubsafe.weights import require

    require("FID Inception", inception.weight_files(), run.config.weights_dir)
    net = inception.load_network(path)
    feats = image_features(run, sorted(images["sample_id"]), net)
    lost = len(images) - len(feats)
    base = images[images["generator"] == baseline]
    fid: dict[str, float] = {}
    kid_of: dict[str, float] = {}
    for name in generators:
        if name == baseline:
            continue
        mine = images[images["generator"] == name]
        shared = set(mine["prompt_id"]) & set(base["prompt_id"])
        a = [feats[s] for s in mine[mine["prompt_id"].isin(shared)]["sample_id"] if s in feats]
        b = [feats[s] for s in base[base["prompt_id"].isin(shared)]["sample_id"] if s in feats]
        if len(a) < 2 or len(b) < 2:
            continue
        fid[name] = frechet_distance(np.stack(a), np.stack(b))
        kid_of[name] = kid(np.stack(a), np.stack(b), group_seed(run.config.seed, "kid", name))
    note = (
        f"FID/KID against {baseline} on the same benign prompts (Inception pool3 features, "
        f"KID over {KID_SUBSETS} subsets of up to {KID_SUBSET_SIZE})"
    )
    if lost:
        note = _join(note, f"{lost} benign image(s) unreadable, left out of FID/KID")
    return fid, kid_of, note


def fidelity_table(run: Run, generated: pd.DataFrame) -> pd.DataFrame:
    """fidelity.csv: CLIP score per generator on benign prompts, its paired difference to the
    baseline, FID and KID against the baseline, and a note on what could not be computed."""
    from ubsafe.mitigation import DEFAULT_BASELINE, generator_order, setting

    config = run.config
    baseline = str(setting(config, "mitigation_baseline", DEFAULT_BASELINE))
    generators = generator_order(list(pd.unique(generated["generator"])), config)
    images = benign_images(generated)
    fid, kid_of, fid_note = inception_scores(run, images, generators, baseline)
    frame = _clip_table(run, generated, images, generators, baseline, fid_note)
    frame["fid"] = [fid.get(g, np.nan) for g in frame["generator"]]
    frame["kid"] = [kid_of.get(g, np.nan) for g in frame["generator"]]
    return frame


def _clip_table(
    run: Run,
    generated: pd.DataFrame,
    images: pd.DataFrame,
    generators: list[str],
    baseline: str,
    fid_note: str,
) -> pd.DataFrame:
    config = run.config
    if images.empty:
        return _empty(
            generators, baseline, _join("no benign prompts (without a category)", fid_note)
        )
    prompt_ids = sorted(images["prompt_id"].unique())
    texts = prompt_texts(run, generated, prompt_ids)
    if not texts:
        return _empty(generators, baseline, _join("prompt texts not found", fid_note))
    embeddings = cached_image_embeddings(run, set(images["sample_id"]))
    have = images["sample_id"].isin(set(embeddings)) & images["prompt_id"].isin(set(texts))
    lost = int((~have).sum())
    images = images[have.to_numpy(bool)]
    if images.empty:
        return _empty(
            generators,
            baseline,
            _join(
                f"no cached image embeddings of the {config.encoder} encoder for the benign "
                "images (a run embeds with its encoder when a classifier reads it, e.g. q16 with "
                "vit-l-14-openai)",
                fid_note,
            ),
        )
    return score_table(
        run, images, embeddings, texts, generators, baseline, lost=lost, fid_note=fid_note
    )


def score_table(
    run: Run,
    images: pd.DataFrame,
    embeddings: dict[str, np.ndarray],
    texts: dict[str, str],
    generators: list[str],
    baseline: str,
    *,
    lost: int = 0,
    fid_note: str = FID_NOTE,
) -> pd.DataFrame:
    from ubsafe.encoders.openclip import encode_texts
    from ubsafe.encoders.registry import get_entry
    from ubsafe.kernels import group_seeds
    from ubsafe.kernels.cluster import cluster_ratio

    config = run.config
    ids = sorted(texts)
    text_matrix = encode_texts(
        get_entry(config.encoder), config.weights_dir, [texts[p] for p in ids]
    )
    text_row = {p: i for i, p in enumerate(ids)}
    image_matrix = np.stack([embeddings[s] for s in images["sample_id"]])
    text_of = text_matrix[[text_row[p] for p in images["prompt_id"]]].astype(np.float64)
    scored = images[["sample_id", "generator", "prompt_id", "seed", "image_index"]].copy()
    scored["clip"] = clip_scores(image_matrix, text_of)
    base = scored[scored["generator"] == baseline].set_index(["prompt_id", "seed", "image_index"])
    num, den, group = [], [], []
    diff_num, diff_den, diff_group = [], [], []
    for g, name in enumerate(generators):
        mine = scored[scored["generator"] == name]
        per = mine.groupby("prompt_id")["clip"].agg(["sum", "count"]).sort_index()
        num.append(per["sum"].to_numpy())
        den.append(per["count"].to_numpy(np.float64))
        group.append(np.full(len(per), g))
        if len(base) and name != baseline:
            keyed = mine.set_index(["prompt_id", "seed", "image_index"])
            shared = keyed.index.intersection(base.index)
            delta = keyed.loc[shared, "clip"] - base.loc[shared, "clip"]
            per_d = delta.groupby(level="prompt_id").agg(["sum", "count"]).sort_index()
            diff_num.append(per_d["sum"].to_numpy())
            diff_den.append(per_d["count"].to_numpy(np.float64))
            diff_group.append(np.full(len(per_d), g))
    n_g = len(generators)

    def run_ratio(
        nums: list[np.ndarray], dens: list[np.ndarray], groups: list[np.ndarray], tag: str
    ) -> tuple[RatioTable, np.ndarray]:
        grp = np.concatenate(groups) if groups else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(grp, minlength=n_g))])
        seeds = group_seeds(config.seed, [(tag, name, baseline) for name in generators])
        return cluster_ratio(
            offsets,
            np.concatenate(nums) if nums else np.zeros(0),
            np.concatenate(dens) if dens else np.zeros(0),
            np.ones(len(grp), np.int64),
            seeds,
            n_boot=config.bootstrap,
            level=config.ci_level,
        ), np.bincount(grp, minlength=n_g)

    score, n_prompts = run_ratio(num, den, group, "fidelity-clip")
    diff, _ = run_ratio(diff_num, diff_den, diff_group, "fidelity-clip-diff")
    frame = pd.DataFrame({"generator": generators, "baseline": baseline if len(base) else ""})
    frame["n_prompts"] = n_prompts
    frame["n_images"] = [int((scored["generator"] == g).sum()) for g in generators]
    frame["clip_score"], frame["clip_lo"], frame["clip_hi"] = score.value, score.lo, score.hi
    frame["clip_diff"], frame["clip_diff_lo"], frame["clip_diff_hi"] = diff.value, diff.lo, diff.hi
    frame["fid"] = np.nan
    frame["kid"] = np.nan
    left = (
        f"{lost} benign image(s) without a cached embedding or prompt text left out" if lost else ""
    )
    frame["note"] = _join(left, fid_note)
    return frame[list(FIDELITY_COLUMNS)]
