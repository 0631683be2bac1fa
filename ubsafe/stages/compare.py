"""Stage `compare`: each classifier's decision under every perturbation and attack, against clean.

Per shard and classifier (on the rows it is judged on, as in `score`):
- embedding classifiers: the hard rule on the cached perturbed embeddings, and the cosine between
  each clean and perturbed embedding (Numba kernel over float16 or float32, no float32 copy);
- image classifiers (NudeNet): decode → letterbox to the model's input size → [0, 1] tensor →
  perturbation → the detector; the clean decision is made on the same letterboxed path, so clean and
  perturbed differ by the perturbation alone. They have no gradients, so no attack rows;
- attacks: the adversarial embeddings from the attack stage, judged there by the hard rule.
Output `shards/compare/shard-NNNNN.parquet`: sample_id, classifier, perturbation, family, severity,
seed, pred_clean, pred, cosine. The reduce stage turns them into Robust Accuracy and flip rates.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ubsafe import embeddings as store
from ubsafe import shardfile
from ubsafe.stages import Needs, common
from ubsafe.targets import runs_stage

if TYPE_CHECKING:
    from PIL import Image

    from ubsafe.rundir import Run

NAME = "compare"
SHARDED = True
log = logging.getLogger(__name__)
COLUMNS = (
    "sample_id",
    "classifier",
    "perturbation",
    "family",
    "severity",
    "seed",
    "pred_clean",
    "pred",
    "cosine",
)


def judge_attacks(run: Run, name: str) -> tuple[str, ...]:
    """The run's attacks that the classifier's entry says its judge supports ([judge] attacks)."""
    from ubsafe.classifiers import get_entry

    judge = get_entry(name).judge
    if judge is None:
        return ()
    return tuple(a for a in run.config.attacks if a in judge.attacks)


def needs_gpu(run: Run) -> bool:
    """A GPU only when a judge of the run runs its model here (perturbed images and attacks go
    through it); queried endpoints, replays and cached embeddings need none."""
    from ubsafe.classifiers import get_entry

    judges = [get_entry(name).judge for name in run.config.classifiers]
    return any(j is not None and j.runs_model_here(run.config) for j in judges)


NEEDS = Needs(
    inputs=(
        "plan.parquet",
        "shards/score/shard-NNNNN.parquet",
        "<cache>/.../<variant>/shard-NNNNN.h5",
        "shards/attack/shard-NNNNN.h5",
        "dataset images (image classifiers)",
    ),
    outputs=("shards/compare/shard-NNNNN.parquet",),
    gpu=needs_gpu,
    kernels=True,
)


def applies(run: Run) -> bool:
    from ubsafe.stages import attack, perturb

    return runs_stage(run.config.target, NAME) and (perturb.applies(run) or attack.applies(run))


def is_done(run: Run, shard: int) -> bool:
    return shardfile.is_done(run, NAME, shard)


def frame(**columns: Any) -> pd.DataFrame:
    n = len(columns["sample_id"])
    data = {}
    for name in COLUMNS:
        value = columns[name]
        data[name] = value if isinstance(value, np.ndarray | list) else [value] * n
    out = pd.DataFrame(data)
    return out.astype(
        {
            "pred_clean": np.int8,
            "pred": np.int8,
            "cosine": np.float32,
            "severity": np.float32,
            "seed": np.int64,
        }
    )


def perturbation_family(name: str) -> str:
    from ubsafe.perturb import get_perturbation

    return str(get_perturbation(name).info.family)


def compare_embeddings(
    run: Run, name: str, chosen: pd.DataFrame, shard: int, clean_pred: dict[str, int]
) -> list[pd.DataFrame]:
    from ubsafe.kernels import row_cosine
    from ubsafe.stages.embed import cache_key
    from ubsafe.stages.perturb import variants
    from ubsafe.stages.score import encoder_for

    if not any(True for _ in variants(run)):
        return []
    ckey = cache_key(run, encoder_for(run, name))
    clean = store.read_shard(run, ckey, "clean", shard)
    clean_at = {sid: i for i, sid in enumerate(clean.sample_ids)}
    ids = [sid for sid in chosen["sample_id"] if sid in clean_at and sid in clean_pred]
    classifier = common.run_classifier(run, name)
    frames = []
    for perturbation, severity, variant in variants(run):
        pert = store.read_shard(run, ckey, variant, shard)
        pert_at = {sid: i for i, sid in enumerate(pert.sample_ids)}
        kept = [sid for sid in ids if sid in pert_at]
        if not kept:
            continue
        perturbed = pert.embeddings[[pert_at[s] for s in kept]]
        pred, _ = classifier.decide(perturbed)
        cosine = row_cosine(clean.embeddings[[clean_at[s] for s in kept]], perturbed)
        frames.append(
            frame(
                sample_id=np.asarray(kept, dtype=object),
                classifier=name,
                perturbation=perturbation,
                family=perturbation_family(perturbation),
                severity=float(severity),
                seed=run.config.seed,
                pred_clean=np.asarray([clean_pred[s] for s in kept], np.int8),
                pred=np.asarray(pred, np.int8),
                cosine=np.asarray(cosine, np.float32),
            )
        )
    return frames


def letterbox(size: int) -> Any:
    """Resize the longer side to `size` (keep aspect), pad to a black square: a [0, 1] tensor."""
    import torch
    from PIL import Image

    def convert(image: Image.Image) -> torch.Tensor:
        scale = size / max(image.size)
        resized = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BILINEAR,
        )
        canvas = Image.new("RGB", (size, size))
        canvas.paste(resized, (0, 0))
        array = np.asarray(canvas, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    return convert


def to_images(pixels: Any) -> list[Image.Image]:
    """[0, 1] tensors (B, 3, H, W) back to 8-bit RGB images for an image classifier."""
    import torch
    from PIL import Image

    arrays = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arrays]


def compare_images(run: Run, name: str, chosen: pd.DataFrame) -> list[pd.DataFrame]:
    import torch

    from ubsafe.perturb import get_perturbation, perturbation_seed
    from ubsafe.stages.perturb import variants

    classifier = common.run_classifier(run, name)
    size = int(getattr(classifier, "input_size", 320))
    decoded = common.decode_shard(run, chosen, letterbox(size))
    if not decoded.items:
        return []
    pixels = torch.stack(decoded.items)
    ids = decoded.sample_ids
    clean_pred, _ = classifier.decide_images(to_images(pixels))
    frames = []
    for perturbation, severity, _ in variants(run):
        seeds = [perturbation_seed(run.config.seed, sid, perturbation, severity) for sid in ids]
        perturbed = get_perturbation(perturbation).apply(pixels, severity, seeds)
        pred, _ = classifier.decide_images(to_images(perturbed))
        frames.append(
            frame(
                sample_id=np.asarray(ids, dtype=object),
                classifier=name,
                perturbation=perturbation,
                family=perturbation_family(perturbation),
                severity=float(severity),
                seed=run.config.seed,
                pred_clean=np.asarray(clean_pred, np.int8),
                pred=np.asarray(pred, np.int8),
                cosine=np.full(len(ids), np.nan, np.float32),
            )
        )
    return frames


def compare_attacks(run: Run, shard: int) -> list[pd.DataFrame]:
    from ubsafe.kernels import row_cosine
    from ubsafe.stages import attack
    from ubsafe.stages.embed import cache_key
    from ubsafe.stages.score import encoder_for

    if not attack.applies(run):
        return []
    groups = attack.read(run, shard)
    frames = []
    for variant in attack.variants(run):
        arrays = groups.get(variant.group) or {}
        if not arrays or not len(arrays.get("sample_id", [])):
            continue
        clean = store.read_shard(
            run, cache_key(run, encoder_for(run, variant.classifier)), "clean", shard
        )
        clean_at = {sid: i for i, sid in enumerate(clean.sample_ids)}
        ids = list(arrays["sample_id"])
        labels = run.plan.set_index("sample_id").loc[ids, "label"].to_numpy(np.int8)
        cosine = row_cosine(clean.embeddings[[clean_at[s] for s in ids]], arrays["embedding"])
        frames.append(
            frame(
                sample_id=np.asarray(ids, dtype=object),
                classifier=variant.classifier,
                perturbation=variant.attack,
                family="attack",
                severity=float(variant.budget),
                seed=variant.seed,
                pred_clean=labels,  # attacked images were all judged correctly on clean input
                pred=np.asarray(arrays["pred"], np.int8),
                cosine=np.asarray(cosine, np.float32),
            )
        )
    return frames


def run_shard(run: Run, shard: int) -> None:
    from ubsafe.classifiers import get_entry
    from ubsafe.stages.score import scored_mask

    rows = run.shard_plan(shard)
    scores = shardfile.read(run.shard_path("score", shard, "parquet"))
    frames: list[pd.DataFrame] = []
    for name in run.config.classifiers:
        chosen = rows[scored_mask(run, rows, name)]
        if chosen.empty:
            continue
        if get_entry(name).input == "embedding":
            mine = scores[(scores["classifier"] == name) & (scores["pred"] >= 0)]
            clean_pred = dict(zip(mine["sample_id"], mine["pred"].astype(int), strict=True))
            frames += compare_embeddings(run, name, chosen, shard, clean_pred)
        else:
            frames += compare_images(run, name, chosen)
            attacks = judge_attacks(run, name)
            if attacks:  # targeted attacks on the judge's answer (ubsafe.attacks.judge_rows)
                from ubsafe.attacks.judge_rows import attack_rows

                frames.append(attack_rows(run, name, shard, attacks))
    frames += compare_attacks(run, shard)
    result = pd.concat(frames, ignore_index=True) if frames else frame(**{c: [] for c in COLUMNS})
    shardfile.write(
        run.shard_path(NAME, shard, "parquet"), result, shardfile.stage_meta(run, NAME, shard)
    )
    log.info("shard %d: %d comparison rows", shard, len(result))
