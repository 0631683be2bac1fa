"""Stage `attack`: FGSM, PGD and DeepFool against every attackable classifier, end to end.

For each attackable classifier the images it judged correctly on clean inputs (from the score stage,
all shards) are the candidates, and up to `attack.max_per_source` of them are drawn with
`random.sample` seeded by the attack seed. ubsafe's mode draws per source kind (real, AI) over the
candidates sorted by sample id; the paper's mode draws as UnsafeBench's code does: from the sources
in `attack.sources` (Laion5B by default), over the candidates in its order (`paper_pool`). The draw
is computed once and saved (`shards/attack/selection.parquet`): every task computes the same table,
so whichever writes it first wins and the rest read it.

Each selected image goes decode → the encoder's resize/crop → [0, 1] pixels → attack through
`encoder.forward` + the classifier's differentiable surrogate (logits; in the paper's mode its
`paper_surrogate`, what UnsafeBench's attacked model returned) → the adversarial pixels are encoded
like clean ones and judged by the hard rule. Output: `shards/attack/shard-NNNNN.h5`, one group per
(classifier, attack, budget, seed) with sample ids, adversarial embeddings, hard-rule predictions
and perturbation norms. NudeNet (ONNX, no gradients) is not attacked: it is judged under noise and
corruptions only.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ubsafe import atomic, shardfile
from ubsafe.stages import Needs, common
from ubsafe.targets import runs_stage

if TYPE_CHECKING:
    from ubsafe.rundir import Run

NAME = "attack"
SHARDED = True
NEEDS = Needs(
    inputs=("plan.parquet", "shards/score/shard-*.parquet (all)", "dataset images", "fitted/"),
    outputs=("shards/attack/selection.parquet", "shards/attack/shard-NNNNN.h5"),
    gpu=True,
)
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
    budgets = [0.0] if c.attack.mode == "paper" else [float(e) for e in c.attack.eps]
    return [
        Variant(name, attack, budget, seed)
        for name in attackable(run)
        for attack in c.attacks
        for budget in budgets
        for seed in c.attack.seeds
    ]


def applies(run: Run) -> bool:
    return runs_stage(run.config.target, NAME) and bool(variants(run))


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
    """(classifier, seed, sample_id, source) of every image to attack.

    ubsafe's mode draws per source kind (real, AI) over the candidates sorted by sample id; the
    paper's mode draws as UnsafeBench does (`paper_pool`).
    """
    from ubsafe.attacks import paper_draw

    scores = clean_predictions(run)
    plan = run.plan.set_index("sample_id")
    scores = scores[scores["pred"] >= 0]
    scores = scores.assign(
        label=plan.loc[scores["sample_id"], "label"].to_numpy(),
        source=plan.loc[scores["sample_id"], "source_kind"].to_numpy(),
    )
    correct = scores[scores["pred"] == scores["label"]]
    k = run.config.attack.max_per_source
    rows = []
    for name in attackable(run):
        mine = correct[correct["classifier"] == name]
        if run.config.attack.mode == "paper":
            pools = [paper_pool(run, name, entry, mine["sample_id"]) for entry in sources(run)]
        else:
            pools = [sorted(group["sample_id"]) for _, group in mine.groupby("source", sort=True)]
        for candidates in pools:
            for seed in run.config.attack.seeds:
                chosen = (
                    paper_draw(len(candidates), seed=seed, k=k) if k else range(len(candidates))
                )
                rows += [(name, seed, candidates[i]) for i in chosen]
    table = pd.DataFrame(rows, columns=["classifier", "seed", "sample_id"])
    table["source"] = plan.loc[table["sample_id"], "source_kind"].to_numpy()
    return table


def sources(run: Run) -> list[list[str]]:
    """The paper mode's draws: each a list of dataset source names pooled into one draw."""
    return [entry.split("+") for entry in run.config.attack.sources]


def check_attack_sources(config: Any, table: pd.DataFrame) -> None:
    """Refuse, before any job, a paper-mode draw from a source the dataset does not have."""
    from ubsafe.config import ConfigError

    if config.attack.mode != "paper" or not runs_stage(config.target, NAME):
        return
    present = set(table["source"].astype(str))
    for entry in config.attack.sources:
        missing = [name for name in entry.split("+") if name not in present]
        if missing:
            raise ConfigError(
                f"attack.sources: {', '.join(map(repr, missing))} is not a source of "
                f"{config.dataset} (its sources: {', '.join(sorted(present))}). fix: set "
                "attack.sources in the config to the sources whose images the paper's mode "
                "should attack"
            )


def paper_pool(run: Run, name: str, source_names: list[str], correct: pd.Series) -> list[str]:
    """The clean-correct candidates of one draw, in UnsafeBench's order.

    UnsafeBench's `random_draw_testing_adv_samples` concatenates, for each source in turn and each
    of the classifier's categories in its order, the train split then the test split, each in the
    dataset's own row order, and keeps the images the classifier got right. `random.sample` then
    picks positions in that list, so the order decides which images a seed draws.
    """
    from ubsafe.stages.score import coverage
    from ubsafe.taxonomy import SPLITS

    plan = run.plan.set_index("sample_id").loc[list(correct)]
    plan = plan[plan["source"].astype(str).isin(source_names)]
    categories = list(coverage(run, name))
    keys = [
        (
            source_names.index(str(row.source)),
            _rank(categories, row.category),
            _rank(list(SPLITS), row.split),
            dataset_position(str(sample_id)),
        )
        for sample_id, row in zip(plan.index, plan.itertuples(index=False), strict=True)
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return [str(plan.index[i]) for i in order]


def _rank(listed: list[str], value: Any) -> tuple[int, str]:
    return (listed.index(value), "") if value in listed else (len(listed), str(value))


def dataset_position(sample_id: str) -> tuple[str, int, str]:
    """A sample's place in its split's row order: UnsafeBench ids number the rows (`train-00042`).

    Ids that end in a number sort by that number (so `train-100000` follows `train-99999`); others
    (a manifest's paths) by the id itself.
    """
    match = re.fullmatch(r"(.*?)(\d+)", sample_id)
    if match is None:
        return (sample_id, -1, sample_id)
    return (match.group(1), int(match.group(2)), sample_id)


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
    steps = None if variant.attack == "fgsm" else run.config.attack.steps
    return ubsafe_spec(variant.attack, variant.budget, steps=steps)


def build_model(run: Run, encoder: Any, classifier: Any) -> Any:
    paper = run.config.attack.mode == "paper"
    return end_to_end(encoder, classifier.paper_surrogate() if paper else classifier.surrogate())


def end_to_end(encoder: Any, head: Any) -> Any:
    """Pixels → `encoder.forward` → `head`: the model an attack differentiates.

    `head` is the classifier's surrogate (logits, ubsafe's mode) or its `paper_surrogate` (what
    UnsafeBench's attacked model returned, which foolbox's losses saw).
    """
    import torch

    class EndToEnd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            embeddings = encoder.forward(pixels).float()
            # The head sees one row at a time: a batched product's rows (and those of its
            # gradient) change in their last bits with the number of rows, as the BLAS picks its
            # kernels by shape, and a sign step on a near-zero gradient component would then
            # depend on the shard size. One row per call is invariant by construction.
            if len(embeddings) <= 1:
                return self.head(embeddings)
            return torch.cat([self.head(row) for row in embeddings.split(1)])

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
            got = common.decode_inputs(run, wanted, encoder)  # the embed stage's decode path
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
