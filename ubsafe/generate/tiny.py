"""Tiny Stable Diffusion pipelines with deterministic random weights, built locally on first use.

The tiny generators (`tiny-sd`, `tiny-sld-max`, `tiny-safegen`) need no download: the first load
builds a UNet, a VAE and a CLIP text encoder from small configs (weights drawn after
`torch.manual_seed`), a DDIM scheduler and a CLIP tokenizer made from a small byte-level
vocabulary and a few merges, and saves them in diffusers' layout (`model_index.json`, `unet/`,
`vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`, safetensors) under
`<weights dir>/tiny/v<version>/<repo>`. The real loader then reads them like any downloaded
pipeline. `ubsafe/tiny-safegen` holds only a `unet/`: the tiny UNet with its self-attention
(`attn1`) weights redrawn, as SafeGen retrained SD's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

TINY_SD = "ubsafe/tiny-sd"
TINY_SAFEGEN = "ubsafe/tiny-safegen"
#: Bump when the tiny configs or the way weights are drawn change (it names the build folder).
TINY_VERSION = 1

_MERGES = (
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("i", "n"),
    ("in", "g</w>"),
    ("e", "r"),
    ("o", "n"),
    ("o", "f</w>"),
    ("a", "r"),
)


def _bytes_to_unicode() -> dict[int, str]:
    """The byte → printable character table of byte-level BPE (as CLIP's tokenizer uses it)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """vocab.json (every byte character, alone and word-final, the merges, the two special tokens)
    and merges.txt, as CLIP's tokenizer reads them."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(pair) for pair in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES), encoding="utf-8"
    )
    return vocab_file, merges_file


def _components(seed: int) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        # read like a downloaded SD tokenizer folder (vocab.json + merges.txt)
        write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(
            tmp, model_max_length=77, pad_token="<|endoftext|>", local_files_only=True
        )
    vocab = tokenizer.get_vocab()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=1000,
            max_position_embeddings=77,
            projection_dim=16,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def _redraw_self_attention(unet: Any, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if ".attn1." in name:
                param.copy_(
                    torch.randn(param.shape, generator=generator) * param.std().clamp(min=0.02)
                )


def tiny_root(weights_dir: str | os.PathLike[str]) -> Path:
    return Path(weights_dir) / "tiny" / f"v{TINY_VERSION}"


def ensure_tiny(weights_dir: str | os.PathLike[str]) -> Path:
    """Build the tiny pipelines under `<weights dir>/tiny/v<version>/` unless already there."""
    root = tiny_root(weights_dir)
    if (root / TINY_SD / "model_index.json").is_file() and (
        root / TINY_SAFEGEN / "unet" / "config.json"
    ).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ubsafe-tmp-tiny-", dir=root.parent))
    try:
        _build(staging)
        try:
            os.rename(staging, root)
        except OSError:
            # another process finished the same deterministic build first
            if not (root / TINY_SD / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _build(folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    parts = _components(seed=0)
    pipe: Any = StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder / TINY_SD, safe_serialization=True)
    _redraw_self_attention(parts["unet"], seed=1)
    parts["unet"].save_pretrained(folder / TINY_SAFEGEN / "unet", safe_serialization=True)
