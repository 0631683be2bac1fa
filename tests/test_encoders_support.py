"""Shared makers for the encoder tests: images, and open_clip models saved in their real formats."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

#: A mid-size ViT (4 layers, width 256, 50 tokens): big enough for BLAS to block its products.
MID_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {
        "image_size": 112,
        "layers": 4,
        "width": 256,
        "head_width": 64,
        "patch_size": 16,
    },
    "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: quick on a shared machine (the bits do not depend on it, see
    test_encoders_invariance)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sample_images(count: int, seed: int = 0) -> list[Image.Image]:
    """Varied RGB images: sizes, aspect ratios (landscape, portrait, tiny), gradients and noise."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        height = int(rng.integers(20, 300))
        width = int(rng.integers(20, 300))
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack(
            [xx / width, yy / height, (xx + yy) / (width + height)], axis=-1
        ) * rng.uniform(0.2, 1.0, size=3)
        noise = rng.normal(0, 0.15 + 0.05 * (index % 3), size=(height, width, 3))
        array = np.clip((base + noise) * 255, 0, 255).astype(np.uint8)
        images.append(Image.fromarray(array, mode="RGB"))
    return images


def tower_digest(encoder: Any) -> str:
    """SHA-256 over the names and bytes of an encoder's weights."""
    digest = hashlib.sha256()
    for name, value in sorted(encoder._tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def write_open_clip_entry(
    root: Path,
    name: str,
    model_cfg: dict[str, Any],
    *,
    quick_gelu: bool,
    seed: int = 0,
) -> tuple[str, Path, Path]:
    """Save a randomly initialised open_clip model in open_clip's checkpoint format, with a
    registry entry for it; return (entry key, weights dir, checkpoint path)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from ubsafe.encoders import add_registry_path

    configs = root / "configs"
    registry = root / "registry"
    weights_dir = root / "weights"
    configs.mkdir(parents=True, exist_ok=True)
    registry.mkdir(parents=True, exist_ok=True)
    config_path = configs / f"{name}.json"
    config_path.write_text(json.dumps(model_cfg))
    open_clip.add_model_config(config_path)

    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    repo = f"ubsafe-test/{name}"
    checkpoint = weights_dir / "hf" / repo / "open_clip_model.safetensors"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))

    size = model_cfg["vision_cfg"]["image_size"]
    entry = {
        "description": f"test model {name}",
        "family": "open_clip",
        "model": name,
        "model_config": f"../configs/{name}.json",
        "quick_gelu": quick_gelu,
        "weights": [{"repo": repo, "filename": "open_clip_model.safetensors"}],
        "embed_dim": model_cfg["embed_dim"],
        "preprocess": {
            "pipeline": "open_clip",
            "resize_mode": "shortest",
            "resize": size,
            "crop": size,
            "interpolation": "bicubic",
            "mean": OPENAI_MEAN,
            "std": OPENAI_STD,
        },
    }
    (registry / f"{name}.json").write_text(json.dumps(entry))
    add_registry_path(registry / f"{name}.json")
    return name, weights_dir, checkpoint
