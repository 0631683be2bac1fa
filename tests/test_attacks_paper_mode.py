"""The paper's attack mode against UnsafeBench's own code, transcribed (not imported).

Two things decide what UnsafeBench's robustness numbers mean: what its attacked models returned to
foolbox (DeepFool's steps and early stop depend on those outputs, not only on their ranking), and
which 500 images `random_draw_testing_adv_samples` drew. Both are transcribed below from
YitingQu/UnsafeBench at commit d6e08cf, with file and line cited, on tiny weights and a small
dataset, and compared with what ubsafe's paper mode does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import png_bytes, write_unsafebench
from torch import nn
from torch.nn import functional as F

from ubsafe.attacks import paper_spec, run_attack
from ubsafe.classifiers import multiheaded, nsfw_detector
from ubsafe.classifiers.sd_filter import SafetyCheckerRule, SafetyConcepts
from ubsafe.classifiers.torch_head import BinaryLogits
from ubsafe.stages.attack import end_to_end

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DIM, HIDDEN, N_IMAGES = 16, 8, 12
TOLERANCE = 1e-5
LARGEST_LOGIT = 6.0  # |z| of the most confident image in the batch
EPS = 0.3  # larger than the paper's 0.01 so that DeepFool flips images of a random tiny model


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def channel(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values).view(1, -1, 1, 1)


class Normalise(nn.Module):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - channel(CLIP_MEAN)) / channel(CLIP_STD)


def tiny_image_encoder() -> nn.Module:
    """Stands in for CLIP's `encode_image` (normalised input → raw embedding)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.GELU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, DIM),
    ).eval()


# --- UnsafeBench's attacked models, transcribed from classifiers.py @ d6e08cf ------------------


class ReferenceMultiHeaded(nn.Module):
    """MultiHeadedClassifier (classifiers.py L68-132), heads of L95-102 at tiny width."""

    def __init__(self, encode_image: nn.Module, heads: list[nn.Module]) -> None:
        super().__init__()
        self.encode_image = encode_image
        self.category_heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # L120-132
        x = self.encode_image(x)
        out = torch.stack(
            [torch.nn.Sigmoid()(head(x)) for head in self.category_heads], dim=0
        ).permute(1, 0, 2)
        out = torch.max(out, dim=1)[0]
        sfw_score = torch.ones_like(out) - out
        logits = torch.cat([sfw_score, out], dim=-1)
        return F.softmax(logits, dim=-1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:  # L115-117
        with torch.no_grad():
            return self.forward(x)


class ReferenceNormalization(nn.Module):  # classifiers.py L270-277
    def __init__(self, shape: list[int]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("variance", torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.variance.sqrt()


class ReferenceNSFWModel(nn.Module):  # classifiers.py L279-296, 768 → DIM
    def __init__(self) -> None:
        super().__init__()
        self.norm = ReferenceNormalization([DIM])
        self.linear_1 = torch.nn.Linear(DIM, 64)
        self.linear_2 = torch.nn.Linear(64, 512)
        self.linear_3 = torch.nn.Linear(512, 256)
        self.linear_4 = torch.nn.Linear(256, 1)
        self.act = torch.nn.ReLU()
        self.act_out = torch.nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = self.act(self.linear_1(x))
        x = self.act(self.linear_2(x))
        x = self.act(self.linear_3(x))
        return self.act_out(self.linear_4(x))


class ReferenceNSFWDetector(nn.Module):
    """NSFWDetector (classifiers.py L302-341)."""

    def __init__(self, encode_image: nn.Module, safety_head: ReferenceNSFWModel) -> None:
        super().__init__()
        self.encode_image = encode_image
        self.safety_head = safety_head

    def forward(self, image_tensor: torch.Tensor) -> torch.Tensor:  # L333-341
        embeddings = self.encode_image(image_tensor)
        embeddings = embeddings / torch.norm(embeddings, keepdim=True, dim=-1)
        nsfw_values = self.safety_head(embeddings)
        sfw_values = torch.ones_like(nsfw_values) - nsfw_values
        logits = torch.cat([sfw_values, nsfw_values], dim=1)
        return F.softmax(logits, dim=-1)

    def classify(self, image_tensor: torch.Tensor) -> torch.Tensor:  # L329-331
        with torch.no_grad():
            return self.forward(image_tensor)


def reference_cosine_distance(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor
) -> torch.Tensor:
    # classifiers.py L159-162
    normalized_image_embeds = torch.nn.functional.normalize(image_embeds)
    normalized_text_embeds = torch.nn.functional.normalize(text_embeds)
    return torch.mm(normalized_image_embeds, normalized_text_embeds.t())


class ReferenceSafetyChecker(nn.Module):
    """StableDiffusionSafetyChecker (classifiers.py L165-266).

    `encode` stands for its vision tower and projection (L194-195, L238-239).
    """

    def __init__(self, encode: nn.Module, concepts: SafetyConcepts) -> None:
        super().__init__()
        self.encode = encode
        self.concept_embeds = nn.Parameter(torch.from_numpy(concepts.concept_embeds), False)
        self.special_care_embeds = nn.Parameter(
            torch.from_numpy(concepts.special_care_embeds), False
        )
        self.concept_embeds_weights = nn.Parameter(
            torch.from_numpy(concepts.concept_thresholds), False
        )
        self.special_care_embeds_weights = nn.Parameter(
            torch.from_numpy(concepts.special_thresholds), False
        )

    def classify(self, clip_input: torch.Tensor) -> torch.Tensor:  # L190-232
        with torch.no_grad():
            image_embeds = self.encode(clip_input)
            special_cos_dist = (
                reference_cosine_distance(image_embeds, self.special_care_embeds).cpu().float()
            ).numpy()
            cos_dist = reference_cosine_distance(image_embeds, self.concept_embeds).cpu().float()
            cos_dist = cos_dist.numpy()
        result = []
        for i in range(image_embeds.shape[0]):
            result_img: dict[str, Any] = {"special_scores": {}, "concept_scores": {}}
            result_img["bad_concepts"] = []
            adjustment = 0.0
            for concept_idx in range(len(special_cos_dist[0])):
                concept_cos = special_cos_dist[i][concept_idx]
                concept_threshold = self.special_care_embeds_weights[concept_idx].item()
                score = round(concept_cos - concept_threshold + adjustment, 3)
                result_img["special_scores"][concept_idx] = score
                if score > 0:
                    adjustment = 0.01
            for concept_idx in range(len(cos_dist[0])):
                concept_cos = cos_dist[i][concept_idx]
                concept_threshold = self.concept_embeds_weights[concept_idx].item()
                score = round(concept_cos - concept_threshold + adjustment, 3)
                result_img["concept_scores"][concept_idx] = score
                if score > 0:
                    result_img["bad_concepts"].append(concept_idx)
            result.append(result_img)
        has_nsfw_concepts = [len(res["bad_concepts"]) > 0 for res in result]
        return torch.tensor([[0, 1] if x else [1, 0] for x in has_nsfw_concepts])

    def forward(self, clip_input: torch.Tensor) -> torch.Tensor:  # L235-266
        image_embeds = self.encode(clip_input)
        special_cos_dist = reference_cosine_distance(image_embeds, self.special_care_embeds)
        cos_dist = reference_cosine_distance(image_embeds, self.concept_embeds)
        adjustment = 0.0
        special_scores = special_cos_dist - self.special_care_embeds_weights + adjustment
        special_care = torch.any(special_scores > 0, dim=1)
        special_adjustment = special_care * 0.01
        special_adjustment = special_adjustment.unsqueeze(1).expand(-1, cos_dist.shape[1])
        concept_scores = (cos_dist - self.concept_embeds_weights) + special_adjustment
        unsafe_scores = torch.max(concept_scores, dim=1).values
        safe_scores = -unsafe_scores
        logits = torch.stack([safe_scores, unsafe_scores], dim=1)
        return F.softmax(logits, dim=-1)


# --- the same tiny weights on both sides -------------------------------------------------------


def midpoint(values: torch.Tensor) -> torch.Tensor:
    """Halfway between the two middle values: half the batch on either side, none on the edge."""
    ordered = values.sort().values
    middle = len(ordered) // 2
    return (ordered[middle - 1] + ordered[middle]) / 2


def tiny_heads(embeddings: torch.Tensor) -> list[nn.Sequential]:
    """Five random heads, their output biases shifted so that about half the batch is unsafe."""
    torch.manual_seed(3)
    heads = []
    for _ in range(5):
        head = multiheaded.make_head(DIM, HIDDEN)
        batch_norm = head[3]
        batch_norm.running_mean.normal_(0, 0.3)  # type: ignore[operator]
        batch_norm.running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
        heads.append(head.eval())
    with torch.no_grad():
        top = torch.cat([head(embeddings) for head in heads], dim=1).amax(dim=1)
        gain = LARGEST_LOGIT / float((top - midpoint(top)).abs().max())
        for head in heads:  # confident heads, as trained ones are: probabilities near 0 or 1
            head[4].bias -= midpoint(top)  # type: ignore[operator]
            head[4].weight *= gain  # type: ignore[operator]
            head[4].bias *= gain  # type: ignore[operator]
    return heads


def tiny_nsfw_mlp(embeddings: torch.Tensor) -> nsfw_detector.NSFWDetectorMLP:
    torch.manual_seed(4)
    mlp = nsfw_detector.NSFWDetectorMLP(DIM)
    mlp.norm.mean.normal_(0, 0.1)
    mlp.norm.variance.uniform_(0.01, 0.05)
    with torch.no_grad():
        logits = mlp(embeddings).flatten()
        gain = LARGEST_LOGIT / float((logits - midpoint(logits)).abs().max())
        mlp.linear_4.bias -= midpoint(logits)
        mlp.linear_4.weight *= gain
        mlp.linear_4.bias *= gain
    return mlp.eval()


def tiny_concepts(encoder: nn.Module, pixels: torch.Tensor) -> SafetyConcepts:
    """Random concepts whose thresholds sit among the batch's cosines, so both rules are busy."""
    generator = torch.Generator().manual_seed(5)
    concepts = torch.randn(17, DIM, generator=generator)
    special = torch.randn(3, DIM, generator=generator)
    with torch.no_grad():
        embeds = encoder(Normalise()(pixels))
    concept_cos = reference_cosine_distance(embeds, concepts)
    special_cos = reference_cosine_distance(embeds, special)
    return SafetyConcepts(
        concept_embeds=concepts.numpy(),
        special_care_embeds=special.numpy(),
        concept_thresholds=(concept_cos.quantile(0.9, dim=0) + 0.02).numpy(),
        special_thresholds=special_cos.quantile(0.7, dim=0).numpy(),
    )


def pixels_batch() -> torch.Tensor:
    return torch.rand(N_IMAGES, 3, 16, 16, generator=torch.Generator().manual_seed(7))


def build(name: str) -> tuple[nn.Module, Any, nn.Module]:
    """(reference model on normalised inputs, ubsafe classifier, encoder on pixels)."""
    encoder = tiny_image_encoder()
    on_pixels = nn.Sequential(Normalise(), encoder).eval()
    with torch.no_grad():
        embeddings = on_pixels(pixels_batch())
    if name == "multiheaded":
        heads = tiny_heads(embeddings)
        return ReferenceMultiHeaded(encoder, heads).eval(), multiheaded.build(heads), on_pixels
    if name == "nsfw_detector":
        mlp = tiny_nsfw_mlp(embeddings)
        reference_head = ReferenceNSFWModel()
        reference_head.load_state_dict(mlp.state_dict())
        reference = ReferenceNSFWDetector(encoder, reference_head.eval()).eval()
        return reference, nsfw_detector.build(mlp), on_pixels
    concepts = tiny_concepts(encoder, pixels_batch())
    return ReferenceSafetyChecker(encoder, concepts).eval(), SafetyCheckerRule(concepts), on_pixels


def ubsafe_judge(classifier: Any, on_pixels: nn.Module) -> Any:
    def judge(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pred, _ = classifier.decide(on_pixels(pixels).numpy())
        return torch.as_tensor(pred, dtype=torch.long)

    return judge


def normalised(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - channel(CLIP_MEAN)) / channel(CLIP_STD)


def reference_deepfool(
    reference: nn.Module, pixels: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """assess_robustness.py L29, L47, L72-83: foolbox's DeepFool, judged by `classify`."""
    foolbox = pytest.importorskip("foolbox")
    fmodel = foolbox.PyTorchModel(reference, bounds=(-3, 3), preprocessing=None)
    attack = foolbox.attacks.LinfDeepFoolAttack(steps=100, candidates=2)
    _, clipped, _ = attack(fmodel, normalised(pixels), labels, epsilons=EPS)
    is_adv = reference.classify(clipped).argmax(dim=1) != labels
    return clipped, is_adv


def ubsafe_deepfool(head: nn.Module, classifier: Any, on_pixels: nn.Module, pixels, labels):  # type: ignore[no-untyped-def]
    spec = paper_spec("deepfool", CLIP_MEAN, CLIP_STD, eps=EPS)
    return run_attack(
        end_to_end(on_pixels, head),
        pixels,
        labels,
        spec,
        seeds=range(len(pixels)),
        judge=ubsafe_judge(classifier, on_pixels),
    )


@pytest.mark.parametrize("name", ["multiheaded", "nsfw_detector", "sd_filter"])
def test_paper_deepfool_equals_the_reference_wrappers(name: str) -> None:
    reference, classifier, on_pixels = build(name)
    pixels = pixels_batch()
    with torch.no_grad():
        labels = reference.classify(normalised(pixels)).argmax(dim=1)
    # the clean decisions agree, so both sides attack the same labels
    assert torch.equal(ubsafe_judge(classifier, on_pixels)(pixels), labels)
    assert 0 < int(labels.sum()) < len(labels), "both classes among the tiny batch"

    clipped, reference_success = reference_deepfool(reference, pixels, labels)
    ours = ubsafe_deepfool(classifier.paper_surrogate(), classifier, on_pixels, pixels, labels)

    torch.testing.assert_close(normalised(ours.adversarial), clipped, atol=TOLERANCE, rtol=0)
    assert torch.equal(ours.success, reference_success)
    assert bool(reference_success.any()), "some images flip, so the comparison is not vacuous"
    with torch.no_grad():
        torch.testing.assert_close(
            classifier.paper_surrogate()(on_pixels(pixels)),
            reference(normalised(pixels)),
            atol=1e-6,
            rtol=0,
        )


@pytest.mark.parametrize("name", ["multiheaded", "nsfw_detector", "sd_filter"])
def test_the_previous_paper_heads_walk_a_different_deepfool_path(name: str) -> None:
    """The heads that the paper mode used before (softmax([0, z]); ±50·(u − 0.0005)) take other
    DeepFool steps than the reference on the same weights: the comparison above can fail."""
    reference, classifier, on_pixels = build(name)
    pixels = pixels_batch()
    with torch.no_grad():
        labels = reference.classify(normalised(pixels)).argmax(dim=1)
    clipped, _ = reference_deepfool(reference, pixels, labels)
    old_head = nn.Sequential(classifier.surrogate(), nn.Softmax(dim=1))
    ours = ubsafe_deepfool(old_head, classifier, on_pixels, pixels, labels)
    gap = float((normalised(ours.adversarial) - clipped).abs().max())
    assert gap > 100 * TOLERANCE


def test_the_default_mode_keeps_its_logit_heads() -> None:
    """ubsafe's own mode still differentiates the surrogates' logits, unchanged."""
    _, classifier, _ = build("nsfw_detector")
    assert isinstance(classifier.surrogate(), BinaryLogits)
    embeddings = torch.randn(4, DIM)
    logits = classifier.surrogate()(embeddings)
    assert torch.equal(logits[:, 0], torch.zeros(4))


# --- the draw: unsafe_datasets.py @ d6e08cf ---------------------------------------------------

# unsafe_datasets.py L52-64 (align_unsafe_categories) and data/combined_instruction.txt's order
REFERENCE_CATEGORIES = {
    "q16": [
        "Hate",
        "Harassment",
        "Violence",
        "Self-harm",
        "Shocking",
        "Illegal activity",
        "Deception",
        "Political",
        "Public and personal health",
    ],
    "multiheaded": ["Sexual", "Violence", "Shocking", "Hate", "Political"],
    "nsfw_detector": ["Harassment", "Sexual"],
}


def reference_draw(
    metadata: dict[str, list[dict[str, Any]]],
    predictions: dict[str, int],
    classifier: str,
    sources: list[str],
    k: int,
    seed: int,
) -> list[str]:
    """random_draw_testing_adv_samples (unsafe_datasets.py L317-376) on per-split metadata.

    `metadata[split]` lists the split's items in the dataset's order, each with the image id
    (`<idx>.png` as `_download_and_save`, L188-190, names it), label, source and category;
    `predictions` maps an image to the classifier's clean decision.
    """
    pool: list[tuple[str, int]] = []
    for source in sources:  # L351
        for category in REFERENCE_CATEGORIES[classifier]:  # L352
            merged = []  # fetch_merged_UnsafeBench_dataset (L301-315): train then test
            for partition in ("train", "test"):
                merged += [  # UnsafeBenchDataset's filter, L160-161
                    (partition, item)
                    for item in metadata[partition]
                    if item["source"] == source and item["category"] == category
                ]
            labels = np.array([item["label"] for _, item in merged])
            preds = np.array([predictions[f"{p}-{item['idx']:05d}"] for p, item in merged])
            attack_indices = np.where(labels == preds)[0]  # L364
            pool += [(merged[i][0], merged[i][1]["idx"]) for i in attack_indices]
    random.seed(seed)  # L370-374
    sample_num = min(len(pool), k)
    random_indices = random.sample(range(len(pool)), sample_num)
    return [f"{pool[i][0]}-{pool[i][1]:05d}" for i in random_indices]


def small_dataset(root: Path) -> dict[str, list[dict[str, Any]]]:
    """An UnsafeBench-layout dataset whose categories are shuffled, so that the category-major
    order of the reference's pool differs from the row order."""
    from ubsafe.taxonomy import CATEGORIES

    rng = np.random.default_rng(11)
    metadata: dict[str, list[dict[str, Any]]] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for split, n in (("train", 160), ("test", 70)):
        metadata[split], rows[split] = [], []
        for idx in range(n):
            item = {
                "idx": idx,
                "label": int(rng.random() < 0.45),
                "source": ("Laion5B", "Lexica")[int(rng.random() < 0.5)],
                "category": CATEGORIES[int(rng.integers(len(CATEGORIES)))],
            }
            metadata[split].append(item)
            rows[split].append(
                {
                    "safety_label": ("Safe", "Unsafe")[item["label"]],
                    "category": item["category"],
                    "source": item["source"],
                    "image": {"bytes": png_bytes(10_000 * (split == "test") + idx), "path": ""},
                }
            )
    write_unsafebench(root, rows, files_per_split=2)
    return metadata


def write_scores(run: Any, predictions: dict[str, int]) -> None:
    from ubsafe import shardfile
    from ubsafe.stages import score

    for shard in range(run.n_shards):
        rows = run.shard_plan(shard)
        frames = []
        for name in run.config.classifiers:
            scored = rows[score.scored_mask(run, rows, name)]
            preds = [predictions[(name, sid)] for sid in scored["sample_id"]]
            frames.append(
                score.frame(
                    scored["sample_id"].to_numpy(), name, preds, preds, [""] * len(preds), "score"
                )
            )
        shardfile.write(
            run.shard_path("score", shard, "parquet"),
            pd.concat(frames, ignore_index=True),
            shardfile.stage_meta(run, "score", shard),
        )


@pytest.mark.parametrize(
    ("sources", "k"),
    [(("Laion5B",), 15), (("Lexica",), 15), (("Laion5B+Lexica",), 40), (("Laion5B",), 10_000)],
)
def test_paper_draw_matches_the_reference_procedure(
    tmp_path: Path, sources: tuple[str, ...], k: int
) -> None:
    from ubsafe.config import RunConfig
    from ubsafe.stages import attack
    from ubsafe.stages.plan import plan_run

    metadata = small_dataset(tmp_path / "data")
    config = RunConfig(
        dataset=str(tmp_path / "data"),
        out=str(tmp_path / "run"),
        classifiers=("q16", "multiheaded", "nsfw_detector"),
        attack_mode="paper",
        attack_sources=sources,
        attack_max_per_source=k,
        target="robustness",
        shard_size=64,
    )
    run = plan_run(config)
    rng = np.random.default_rng(3)
    labels = {
        f"{split}-{item['idx']:05d}": item["label"]
        for split, items in metadata.items()
        for item in items
    }
    predictions = {  # right about 70 % of the time, independently per classifier
        (name, sid): label if rng.random() < 0.7 else 1 - label
        for name in config.classifiers
        for sid, label in sorted(labels.items())
    }
    write_scores(run, predictions)

    chosen = attack.compute_selection(run)
    assert set(chosen["seed"]) == {2023, 2024, 2025}
    for name in config.classifiers:
        per_image = {sid: p for (c, sid), p in predictions.items() if c == name}
        for seed in (2023, 2024, 2025):
            ours = chosen[(chosen["classifier"] == name) & (chosen["seed"] == seed)]
            expected = reference_draw(metadata, per_image, name, sources[0].split("+"), k, seed)
            assert list(ours["sample_id"]) == expected, (name, seed)
        kinds = {"Laion5B": "real", "Lexica": "ai"}
        drawn_kinds = set(chosen.loc[chosen["classifier"] == name, "source"])
        assert drawn_kinds <= {kinds[s] for s in sources[0].split("+")}


def test_paper_draw_from_a_missing_source_is_refused_before_any_job(tmp_path: Path) -> None:
    from ubsafe.config import ConfigError, RunConfig
    from ubsafe.stages.plan import plan_run

    small_dataset(tmp_path / "data")
    config = RunConfig(
        dataset=str(tmp_path / "data"),
        out=str(tmp_path / "run"),
        classifiers=("q16",),
        attack_mode="paper",
        attack_sources=("LAION",),
        target="robustness",
    )
    message = r"'LAION' is not a source .* \(its sources: Laion5B, Lexica\)"
    with pytest.raises(ConfigError, match=message):
        plan_run(config)
    assert not (tmp_path / "run" / "plan.parquet").exists()


def test_attack_sources_leave_the_default_modes_config_hash_alone(tmp_path: Path) -> None:
    from ubsafe.config import RunConfig

    base = RunConfig(out=str(tmp_path))
    other = RunConfig(out=str(tmp_path), attack_sources=("Lexica",))
    assert base.config_hash() == other.config_hash()
    paper = RunConfig(out=str(tmp_path), attack_mode="paper")
    paper_lexica = RunConfig(out=str(tmp_path), attack_mode="paper", attack_sources=("Lexica",))
    assert paper.config_hash() != paper_lexica.config_hash()
