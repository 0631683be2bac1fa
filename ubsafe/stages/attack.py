"""Stage `attack`: FGSM, PGD and DeepFool against every attackable classifier, end to end.

For each attackable classifier the images it judged correctly on clean inputs (from the score stage,
all shards) are the candidates; per source (real, AI) up to `attack_max_per_source` of them are
drawn
as UnsafeBench draws (`random.sample` seeded by the attack seed, over candidates sorted by sample
id).
The draw is computed once and saved (`shards/attack/selection.parquet`): every task computes the
same
table, so whichever writes it first wins and the rest read it.

Each selected image goes decode → the encoder's resize/crop → [0, 1] pixels → attack through
`encoder.forward` + the classifier's differentiable surrogate (logits; the paper's mode adds the
softmax its classifiers returned) → the adversarial pixels are encoded like clean ones and judged by
the hard rule. Output: `shards/attack/shard-NNNNN.h5`, one group per (classifier, attack, budget,
seed) with sample ids, adversarial embeddings, hard-rule predictions and perturbation norms.
NudeNet (ONNX, no gradients) is not attacked: it is judged under noise and corruptions only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ubsafe import atomic, shardfile
from ubsafe.stages import common

if TYPE_CHECKING:
    from ubsafe.rundir import Run

NAME = "attack"
SHARDED = True
log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Variant:
    classifier: str
    attack: str
    budget: float  # eps in /255 units (ubsafe mode); 0 for the paper's normalised-space budget
    seed: int

    @property
    def group(self) -> str:
        budget = "paper" if self.budget == 0 else f"eps{self.budget:g}"
        return f"{self.classifier}/{self.attack}-{budget}-seed{self.seed}"


def attackable(run: Run) -> list[str]:
    from ubsafe.classifiers import get_entry

    names = []
    for name in run.config.classifiers:
        entry = get_entry(name)
        if entry.attackable and entry.input == "embedding":
            names.append(name)
    return names


def variants(run: Run) -> list[Variant]:
    c = run.config
    budgets = [0.0] if c.attack_mode == "paper" else [float(e) for e in c.attack_eps]
    return [
        Variant(name, attack, budget, seed)
        for name in attackable(run)
        for attack in c.attacks
        for budget in budgets
        for seed in c.attack_seeds
    ]


def applies(run: Run) -> bool:
    return run.config.target in ("robustness", "all") and bool(variants(run))


def output(run: Run, shard: int) -> Path:
    return run.shard_path(NAME, shard, "h5")


def expected_attrs(run: Run, shard: int) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "stage": NAME,
        "shard": shard,
        "config_hash": run.config.config_hash(),
        "fingerprint": run.dataset_fingerprint,
    }


def is_done(run: Run, shard: int) -> bool:
    import h5py

    path = output(run, shard)
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r", locking=False) as h5:
            attrs = dict(h5.attrs)
    except OSError:
        return False
    return all(attrs.get(k) == v for k, v in expected_attrs(run, shard).items())


# --- selection ---


def selection_path(run: Run) -> Path:
    return run.root / "shards" / NAME / "selection.parquet"


def clean_predictions(run: Run) -> pd.DataFrame:
    """Every score shard's rows (all must be present: the draw depends on all of them)."""
    from ubsafe.stages.reduce import MissingShards

    problems = [
        (s, why)
        for s in range(run.n_shards)
        if (
            why := shardfile.problem(
                run.shard_path("score", s, "parquet"), shardfile.stage_meta(run, "score", s)
            )
        )
    ]
    if problems:
        raise MissingShards(run, {"score": problems})
    parts = [shardfile.read(run.shard_path("score", s, "parquet")) for s in range(run.n_shards)]
    return pd.concat(parts, ignore_index=True)


def compute_selection(run: Run) -> pd.DataFrame:
    """(classifier, seed, sample_id) of every image to attack, drawn per source as in the paper."""
    from ubsafe.attacks import paper_draw

    scores = clean_predictions(run)
    plan = run.plan.set_index("sample_id")
    scores = scores[scores["pred"] >= 0]
    scores = scores.assign(
        label=plan.loc[scores["sample_id"], "label"].to_numpy(),
        source=plan.loc[scores["sample_id"], "source_kind"].to_numpy(),
    )
    correct = scores[scores["pred"] == scores["label"]]
    k = run.config.attack_max_per_source
    rows = []
    for name in attackable(run):
        mine = correct[correct["classifier"] == name]
        for source, group in mine.groupby("source", sort=True):
            candidates = sorted(group["sample_id"])
            for seed in run.config.attack_seeds:
                chosen = (
                    paper_draw(len(candidates), seed=seed, k=k) if k else range(len(candidates))
                )
                rows += [(name, seed, candidates[i], source) for i in chosen]
    return pd.DataFrame(rows, columns=["classifier", "seed", "sample_id", "source"])


def selection(run: Run) -> pd.DataFrame:
    path = selection_path(run)
    meta = shardfile.read_meta(path) if path.is_file() else None
    want = {"stage": "attack-selection", "config_hash": run.config.config_hash()}
    if meta is not None and all(meta.get(k) == v for k, v in want.items()):
        return shardfile.read(path)
    table = compute_selection(run)
    shardfile.write(path, table, want)  # identical content from any task: the last rename wins
    return table


# --- one shard ---


def spec_for(run: Run, variant: Variant, encoder: Any) -> Any:
    from ubsafe.attacks import paper_spec, ubsafe_spec

    if variant.budget == 0:
        return paper_spec(variant.attack, tuple(encoder.mean), tuple(encoder.std))
    steps = None if variant.attack == "fgsm" else run.config.attack_steps
    return ubsafe_spec(variant.attack, variant.budget, steps=steps)


def build_model(run: Run, encoder: Any, classifier: Any) -> Any:
    import torch

    class EndToEnd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = classifier.surrogate()
            self.softmax = run.config.attack_mode == "paper"

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            logits = self.head(encoder.forward(pixels).float())
            # the paper's classifiers returned probabilities, and foolbox's loss saw those
            return torch.softmax(logits, dim=1) if self.softmax else logits

    return EndToEnd()


def attack_variant(
    run: Run, variant: Variant, sample_ids: list[str], pixels: Any, labels: np.ndarray
) -> dict[str, np.ndarray]:
    import torch

    from ubsafe.attacks import attack_seed, run_attack
    from ubsafe.stages.score import encoder_for

    encoder = common.run_encoder(run, encoder_for(run, variant.classifier))
    classifier = common.run_classifier(run, variant.classifier, device=str(encoder.device))
    spec = spec_for(run, variant, encoder)
    model = build_model(run, encoder, classifier).to(encoder.device)
    embeddings: list[np.ndarray] = []

    def judge(adversarial: torch.Tensor) -> torch.Tensor:
        encoded = encoder.encode(adversarial)
        embeddings.append(encoded)
        pred, _ = classifier.decide(encoded)
        return torch.as_tensor(pred, dtype=torch.long, device=adversarial.device)

    seeds = [attack_seed(variant.seed, sid, spec.key) for sid in sample_ids]
    result = run_attack(
        model,
        pixels.to(encoder.device),
        torch.as_tensor(labels, dtype=torch.long, device=encoder.device),
        spec,
        seeds=seeds,
        judge=judge,
    )
    adversarial = embeddings[-1]
    pred, score = classifier.decide(adversarial)
    return {
        "sample_id": np.asarray(sample_ids, dtype=object),
        "embedding": adversarial.astype(run.config.embedding_dtype),
        "pred": pred.astype(np.int8),
        "score": score.astype(np.float32),
        "linf": result.linf.detach().cpu().numpy().astype(np.float32),
        "success": result.success.detach().cpu().numpy().astype(bool),
    }


def run_shard(run: Run, shard: int) -> None:
    import torch

    from ubsafe.stages.score import encoder_for

    rows = run.shard_plan(shard).set_index("sample_id")
    chosen = selection(run)
    chosen = chosen[chosen["sample_id"].isin(rows.index)]
    results: dict[str, dict[str, np.ndarray]] = {}
    decoded: dict[str, tuple[list[str], Any]] = {}
    for variant in variants(run):
        ids = sorted(
            chosen.loc[
                (chosen["classifier"] == variant.classifier) & (chosen["seed"] == variant.seed),
                "sample_id",
            ]
        )
        key = encoder_for(run, variant.classifier)
        if key not in decoded:
            encoder = common.run_encoder(run, key)
            wanted = rows.loc[sorted(set(chosen["sample_id"]))].reset_index()
            got = common.decode_shard(run, wanted, encoder.to_input)
            decoded[key] = (got.sample_ids, torch.stack(got.items) if got.items else None)
        all_ids, all_pixels = decoded[key]
        position = {sid: i for i, sid in enumerate(all_ids)}
        ids = [sid for sid in ids if sid in position]
        if not ids or all_pixels is None:
            results[variant.group] = {}
            continue
        start = time.perf_counter()
        pixels = all_pixels[[position[s] for s in ids]]
        labels = rows.loc[ids, "label"].to_numpy(np.int64)
        results[variant.group] = attack_variant(run, variant, ids, pixels, labels)
        success = results[variant.group]["success"]
        log.info(
            "shard %d %s: %d images, %d flipped, %.1f s",
            shard,
            variant.group,
            len(ids),
            int(success.sum()),
            time.perf_counter() - start,
        )
    write(run, shard, results)


def write(run: Run, shard: int, results: dict[str, dict[str, np.ndarray]]) -> Path:
    import h5py

    path = output(run, shard)
    strings = h5py.string_dtype(encoding="utf-8")
    with atomic.atomic_path(path) as tmp, h5py.File(tmp, "w", locking=False) as h5:
        for group_name, arrays in results.items():
            group = h5.create_group(group_name)
            for name, values in arrays.items():
                if name == "sample_id":
                    group.create_dataset(name, data=values, dtype=strings)
                else:
                    group.create_dataset(name, data=values)
        for key, value in expected_attrs(run, shard).items():
            h5.attrs[key] = value
        h5.attrs["variants"] = json.dumps(sorted(results))
    return path


def read(run: Run, shard: int) -> dict[str, dict[str, np.ndarray]]:
    """Every variant group of the shard's attack file (after checking it belongs to the run)."""
    import h5py

    if not is_done(run, shard):
        raise FileNotFoundError(
            f"{output(run, shard)}: attack output missing or from another config"
        )
    out: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(output(run, shard), "r", locking=False) as h5:
        for group_name in json.loads(h5.attrs["variants"]):
            group = h5[group_name]
            out[group_name] = {
                name: (group[name].asstr()[...] if name == "sample_id" else group[name][...])
                for name in group
            }
    return out
