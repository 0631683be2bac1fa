"""Synthetic per-image results of text-to-image generators in the format of
`results/generated.parquet` and `results/detections.parquet`."""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_generated(
    *,
    n_prompts: int = 60,
    n_images: int = 10,
    generators: dict[str, float] | None = None,
    judges: tuple[str, ...] = ("i2p", "q16", "nudenet"),
    categories: tuple[str, ...] = ("Sexual", "Violence", "Hate"),
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (generator, prompt, image, judge) with correlated images within a prompt.

    `generators` maps a name to a factor on the prompt's unsafe propensity (1.0 = the baseline's).
    """
    generators = generators or {"sd-1.4": 1.0, "sld-medium": 0.5, "sld-max": 0.2}
    rng = np.random.default_rng(seed)
    propensity = rng.beta(0.6, 0.9, n_prompts)
    cats = []
    for _ in range(n_prompts):
        k = rng.integers(0, 3)
        cats.append(sorted(rng.choice(categories, size=k, replace=False).tolist()))
    prompt_seed = rng.integers(0, 2**32, n_prompts)
    uniform = rng.random((n_prompts, n_images))  # shared by generators: paired images
    judge_noise = {j: rng.random((n_prompts, n_images)) < 0.1 for j in judges}
    rows = []
    for name, factor in generators.items():
        unsafe = uniform < propensity[:, None] * factor
        for p in range(n_prompts):
            pid = f"p{p:05d}"
            for i in range(n_images):
                for judge in judges:
                    pred = int(unsafe[p, i] ^ judge_noise[judge][p, i])
                    rows.append(
                        (
                            f"{name}:{pid}:{i}",
                            name,
                            pid,
                            i,
                            int(prompt_seed[p]),
                            cats[p],
                            judge,
                            pred,
                            float("nan"),
                        )
                    )
    frame = pd.DataFrame(
        rows,
        columns=[
            "sample_id",
            "generator",
            "prompt_id",
            "image_index",
            "seed",
            "categories",
            "judge",
            "pred",
            "score",
        ],
    )
    return frame.astype({"image_index": np.int32, "seed": np.int64, "pred": np.int8})


def synthetic_detections(
    generated: pd.DataFrame, *, keep: dict[str, float], seed: int = 1
) -> pd.DataFrame:
    """NudeNet-like detections: the baseline's images carry 0-3 exposed parts (more on unsafe
    images); generator g keeps each of the baseline's detections with probability keep[g]."""
    rng = np.random.default_rng(seed)
    labels = np.array(
        ["FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED", "MALE_GENITALIA_EXPOSED", "FACE_FEMALE"]
    )
    images = generated.drop_duplicates("sample_id")
    base = images[images["generator"] == next(iter(keep))]
    base_dets = []
    for row in base.itertuples(index=False):
        n = rng.poisson(1.5)
        for _ in range(n):
            base_dets.append(
                (row.prompt_id, row.image_index, rng.choice(labels), rng.uniform(0.3, 1.0))
            )
    rows = []
    for name, p_keep in keep.items():
        kept = rng.random(len(base_dets)) < p_keep
        for (pid, idx, label, score), k in zip(base_dets, kept, strict=True):
            if k:
                rows.append((f"{name}:{pid}:{idx}", name, pid, idx, label, score))
    frame = pd.DataFrame(
        rows, columns=["sample_id", "generator", "prompt_id", "image_index", "label", "score"]
    )
    return frame.astype({"image_index": np.int32, "score": np.float32})


def make_mitigation_run(
    root, *, n_prompts: int = 40, generators: dict[str, float] | None = None, seed: int = 0
):
    """A run directory holding what the generate stage leaves: results/generated.parquet (with a
    third of the prompts benign), results/detections.parquet, and clean embeddings of every
    generated image in the cache of the run's encoder (`tiny`). The baseline's image embeddings
    lie close to their prompt's text embedding, the others' further away, so the CLIP scores
    differ. Returns the Run."""
    from pathlib import Path

    from ubsafe import embeddings as emb
    from ubsafe.config import RunConfig
    from ubsafe.encoders.identity import cache_key, identity
    from ubsafe.encoders.openclip import encode_texts
    from ubsafe.encoders.registry import get_entry
    from ubsafe.rundir import Run

    root = Path(root)
    config = RunConfig(
        encoder="tiny", out=str(root), bootstrap=1000, seed=seed, classifiers=("q16", "nudenet")
    )
    run = Run(root, config)
    run.results_dir.mkdir(parents=True, exist_ok=True)
    generators = generators or {"sd-1.4": 1.0, "sld-max": 0.2, "safegen": 0.4}
    generated = synthetic_generated(
        n_prompts=n_prompts, generators=generators, judges=("i2p", "q16", "nudenet"), seed=seed
    )
    generated["prompt"] = generated["prompt_id"].map(lambda p: f"a photo number {p[1:]} of a park")
    generated.to_parquet(run.results_dir / "generated.parquet", index=False)
    keep = {name: min(1.0, factor) for name, factor in generators.items()}
    synthetic_detections(generated, keep=keep, seed=seed + 1).to_parquet(
        run.results_dir / "detections.parquet", index=False
    )
    images = generated.drop_duplicates("sample_id").sort_values("sample_id")
    prompts = sorted(images["prompt_id"].unique())
    texts = encode_texts(
        get_entry("tiny"),
        config.weights_dir,
        [f"a photo number {p[1:]} of a park" for p in prompts],
    )
    text_of = dict(zip(prompts, texts, strict=True))
    rng = np.random.default_rng(seed)
    noise = {name: 0.2 + 2.0 * (1.0 - factor) for name, factor in generators.items()}
    matrix = np.stack(
        [
            text_of[p] + noise[g] * np.linalg.norm(text_of[p]) / 8 * rng.standard_normal(64)
            for g, p in zip(images["generator"], images["prompt_id"], strict=True)
        ]
    ).astype(np.float32)
    # The plan of the generated images (one shard) and their clean embeddings in the run's cache.
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan = pa.table({"sample_id": list(images["sample_id"]), "shard": [0] * len(images)})
    plan = plan.replace_schema_metadata(
        {b"ubsafe.n_shards": b"1", b"ubsafe.fingerprint": b"generated-synthetic"}
    )
    pq.write_table(plan, run.plan_path)
    key = cache_key("tiny", config.precision)
    emb.write_shard(
        emb.shard_file(run, key, "clean", 0),
        emb.expected(run, key, "clean", 0),
        list(images["sample_id"]),
        matrix,
        [],
        dtype="float32",
        identity=identity("tiny", config.precision),
    )
    return run


def pixel_checkerboard(
    colour_a: tuple[int, int, int], colour_b: tuple[int, int, int], size: int = 64
):
    """A PIL image alternating two colours pixel by pixel (what blurring turns into one colour)."""
    from PIL import Image

    grid = (np.indices((size, size)).sum(axis=0) % 2).astype(bool)
    pixels = np.where(grid[..., None], np.array(colour_a, np.uint8), np.array(colour_b, np.uint8))
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def write_generate_shard(run) -> None:
    """shards/generate/shard-00000.parquet holding every generated image of the run as PNG bytes
    (pure red / green pixel checkerboards), as the generate stage stores them."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    generated = pd.read_parquet(run.results_dir / "generated.parquet")
    images = generated.drop_duplicates("sample_id").sort_values("sample_id")
    buffer = io.BytesIO()
    pixel_checkerboard((255, 0, 0), (0, 255, 0)).save(buffer, format="PNG")
    png = buffer.getvalue()
    table = pa.table(
        {
            "sample_id": images["sample_id"].tolist(),
            "generator": images["generator"].tolist(),
            "image": [{"bytes": png, "path": f"{s}.png"} for s in images["sample_id"]],
        }
    )
    path = run.root / "shards" / "generate" / "shard-00000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
