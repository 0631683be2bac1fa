"""Helpers for the VLM stage tests: small UnsafeBench datasets, runs on tiny judges, stages."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from conftest import write_unsafebench
from PIL import Image

from ubsafe.taxonomy import CATEGORIES

#: Square images at the tiny judges' input size (and the perturbations' minimum side): the same
#: pixels reach a judge on every path.
SIDE = 32
NOT_AN_IMAGE = b"this is not an image"


def square_png(seed: int, side: int = SIDE) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def dataset_rows(n: int, seed: int, *, corrupt: Sequence[int] = ()) -> list[dict[str, Any]]:
    """`n` rows over every category and both sources, about half unsafe."""
    rng = np.random.default_rng(seed)
    return [
        {
            "safety_label": "Unsafe" if rng.random() < 0.5 else "Safe",
            "category": CATEGORIES[(3 * i + seed) % len(CATEGORIES)],
            "source": ("Laion5B", "Lexica")[i % 2],
            "image": {
                "bytes": NOT_AN_IMAGE if i in corrupt else square_png(1000 * seed + i),
                "path": f"{i}.png",
            },
        }
        for i in range(n)
    ]


def write_dataset(
    root: Path, n_train: int, n_test: int, *, corrupt_test: Sequence[int] = ()
) -> Path:
    return write_unsafebench(
        root,
        {"train": dataset_rows(n_train, 1), "test": dataset_rows(n_test, 2, corrupt=corrupt_test)},
    )


#: gpt4v asking the OpenAI-compatible endpoint of OPENAI_BASE_URL, its answers read by the rules
GPT4V_QUERY: dict[str, Any] = {
    "classifiers": "gpt4v",
    "gpt4v_mode": "query",
    "gpt4v_model": "gpt-4o-test",
    "vlm_converter": "rules",
    "vlm_requests_per_minute": 60_000,
}


def start_run(out: Path, dataset: Path, weights: Path, **flags: Any) -> Any:
    """Plan a run the way `ubsafe run` does (preflight checks first)."""
    from ubsafe.cli.pipeline import prepare
    from ubsafe.config import build_config

    base = {
        "out": str(out),
        "encoder": "tiny",
        "weights_dir": str(weights),
        "device": "cpu",
        "vlm_max_new_tokens": 4,
        "vlm_batch_size": 4,
        "shard_size": 5,
        "decode_workers": 0,
    }
    return prepare(build_config(dataset=dataset, flags={**base, **flags}))


def run_stages(run: Any, target: str = "effectiveness", *, until: str = "score") -> dict[str, list]:
    """Run the target's stages in order up to `until` (in this process); failed shards by stage."""
    from ubsafe.launch.local import run_stage
    from ubsafe.stages import pipeline

    failed: dict[str, list[int]] = {}
    for stage in pipeline(target):
        if stage.applies(run):
            failures = run_stage(run, stage)
            if failures:
                failed[stage.name] = failures
                break
        if stage.name == until:
            break
    return failed


def score_rows(run: Any) -> pd.DataFrame:
    parts = [pd.read_parquet(run.shard_path("score", s, "parquet")) for s in range(run.n_shards)]
    return pd.concat(parts, ignore_index=True)


def answer_rows(run: Any) -> pd.DataFrame:
    from ubsafe.vlm import responses

    return responses.read(run)


def error_of(run: Any, stage: str, shard: int) -> dict[str, Any]:
    return dict(json.loads(run.error_path(stage, shard).read_text(encoding="utf-8")))


def majority_with_coin(labels: Sequence[int], seed: int, sample_id: str) -> int:
    """The paper's vote written out: most common label, the first among equals; unsure (2) is
    settled by the low bit of BLAKE2b(seed, sample id)."""
    counts: dict[int, int] = {}
    for label in labels:
        counts[int(label)] = counts.get(int(label), 0) + 1
    top = max(counts.values())
    winner = next(label for label in counts if counts[label] == top)
    if winner == 2:
        digest = hashlib.blake2b(f"{seed}\x1f{sample_id}".encode(), digest_size=8).digest()
        return digest[0] & 1
    return winner


def save_varied_converter(weights: Path) -> Path:
    """The tiny converter in the authors' format (`tiny.save_tiny_converter`), with its head
    centred on typical answers: a random head labels nearly every text alike (the first token's
    hidden state hardly varies), this one spreads them over safe, unsafe and unsure."""
    import torch

    from ubsafe.testing import tiny
    from ubsafe.vlm import prompts
    from ubsafe.vlm.converter import RobertaConverter

    path = tiny.save_tiny_converter(weights)
    converter = RobertaConverter.from_weights(weights)
    words = [w for line in prompts.category_definitions().values() for w in line.split()[:40]]
    texts = [" ".join(words[i : i + 4]) for i in range(0, len(words), 4)]
    encoded = converter.tokenizer(texts, padding=True, return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        hidden = converter.model.roberta(**encoded).last_hidden_state[:, 0]  # type: ignore[operator]
    state = torch.load(path, weights_only=True)
    weight = state["classifier.weight"] * 1000
    state["classifier.weight"] = weight
    state["classifier.bias"] = -(weight @ hidden.mean(dim=0))
    torch.save(state, path)
    return path
