"""Load a generator from the weights directory (offline, safetensors only) and make images.

Components are loaded one by one from the diffusers layout of the entry's `base` repository — text
encoder, tokenizer, VAE, scheduler, UNet (or the `unet` repository's, for SafeGen) — and put into
`StableDiffusionPipeline` or `StableDiffusionPipelineSafe`, always without a safety checker (a
checker blacks out flagged images, which would then be judged safe).

Each image's starting latent is given by the caller (see `ubsafe.generate.seeding`), so an image
does not depend on which batch or shard made it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ubsafe.generate.presets import SAFETY_CONCEPT, SLD_PRESETS
from ubsafe.generate.registry import GeneratorEntry, get_generator

if TYPE_CHECKING:
    import torch
    from PIL import Image

PRECISIONS = {"float32", "float16", "bfloat16"}


def repo_dir(repo: str, entry: GeneratorEntry, weights_dir: str | os.PathLike[str]) -> Path:
    """Where a repository's diffusers layout lies: `DIR/hf/<repo>` (tiny: built under
    `DIR/tiny/`)."""
    if entry.tiny:
        from ubsafe.generate.tiny import ensure_tiny

        return ensure_tiny(weights_dir) / repo
    return Path(weights_dir) / "hf" / repo


def resolve_precision(precision: str, device: str) -> str:
    """`auto`: float16 on a GPU, float32 on the CPU."""
    if precision == "auto":
        return "float32" if device == "cpu" else "float16"
    return precision


@dataclass(frozen=True)
class Request:
    """One pipeline call: prompts with their starting latents and shared settings."""

    prompts: list[str]
    negative_prompts: list[str | None]
    latents: torch.Tensor
    guidance: float
    steps: int
    width: int
    height: int


class Generator:
    """A loaded text-to-image generator: the pipeline plus its registry entry's settings."""

    def __init__(self, entry: GeneratorEntry, pipe: Any, device: str, precision: str):
        self.entry = entry
        self.pipe = pipe
        self.device = device
        self.precision = precision

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.unet.config.in_channels)

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        f = self.vae_scale_factor
        if width % f or height % f:
            raise ValueError(
                f"generator {self.entry.name}: size {width}×{height} is not a multiple of {f}"
            )
        return (self.latent_channels, height // f, width // f)

    def truncated(self, prompt: str) -> bool:
        """Whether the text encoder sees only the first 77 tokens of `prompt` (as the pipeline)."""
        tokenizer = self.pipe.tokenizer
        ids = tokenizer(prompt, truncation=False, add_special_tokens=True)["input_ids"]
        return len(ids) > int(tokenizer.model_max_length)

    def negative_for(self, own: str | None) -> str | None:
        """The negative prompt of one image: the prompt file's own, plus SLD's concept for the
        negative-prompt baseline."""
        if self.entry.negative_prompt == "safety_concept":
            return f"{own}, {SAFETY_CONCEPT}" if own else SAFETY_CONCEPT
        return own or None

    def call_kwargs(self, request: Request) -> dict[str, Any]:
        """The pipeline's keyword arguments for `request` (what a direct diffusers call passes)."""
        import torch

        negatives = [self.negative_for(n) for n in request.negative_prompts]
        kwargs: dict[str, Any] = {
            "prompt": list(request.prompts),
            "negative_prompt": [n or "" for n in negatives] if any(negatives) else None,
            "latents": request.latents.to(self.device, dtype=getattr(torch, self.precision)),
            "guidance_scale": float(request.guidance),
            "num_inference_steps": int(request.steps),
            "width": int(request.width),
            "height": int(request.height),
            "output_type": "pil",
        }
        if self.entry.pipeline == "sld":
            kwargs.update(SLD_PRESETS[self.entry.sld_preset])
        return kwargs

    def __call__(self, request: Request) -> list[Image.Image]:
        import torch

        # diffusers' deprecation notices (SLD's pipeline, decode_latents) are known and documented
        # in the registry entries; they would only add noise to every shard's terminal output
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            out = self.pipe(**self.call_kwargs(request))
        return list(out.images)


def load_generator(
    name: str, weights_dir: str | os.PathLike[str], *, device: str, precision: str = "auto"
) -> Generator:
    """Load generator `name` from the weights directory, offline; no safety checker."""
    import diffusers
    import torch
    import transformers
    from transformers import CLIPTextModel, CLIPTokenizer

    from ubsafe import weights

    # loading bars and deprecation notices of the libraries stay off the terminal
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    entry = get_generator(name)
    weights.require(f"generator {name}", entry.weight_files(), weights_dir)
    weights.offline_hub()
    precision = resolve_precision(precision, device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(sorted(PRECISIONS))}")
    dtype = getattr(torch, precision)
    base = repo_dir(entry.base, entry, weights_dir)
    unet_root = repo_dir(entry.unet, entry, weights_dir) if entry.unet else base
    common: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(base / "text_encoder", dtype=dtype, **common)
    vae = diffusers.AutoencoderKL.from_pretrained(
        base, subfolder="vae", torch_dtype=dtype, **common
    )
    unet = diffusers.UNet2DConditionModel.from_pretrained(
        unet_root, subfolder="unet", torch_dtype=dtype, **common
    )
    scheduler_config = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    scheduler_class = getattr(diffusers, scheduler_config["_class_name"])
    scheduler = scheduler_class.from_pretrained(base, subfolder="scheduler", local_files_only=True)
    parts: dict[str, Any] = {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    pipeline_class: Any = (
        diffusers.StableDiffusionPipelineSafe
        if entry.pipeline == "sld"
        else diffusers.StableDiffusionPipeline
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        pipe = pipeline_class(**parts).to(device)
    pipe.set_progress_bar_config(disable=True)
    return Generator(entry, pipe, device, precision)


def sizes_of(entry: GeneratorEntry, width: Any, height: Any) -> tuple[int, int]:
    """The prompt's size where it gives one (I2P: ≤ 512 px), else the generator's."""
    import pandas as pd

    w = entry.width if width is None or pd.isna(width) else int(width)
    h = entry.height if height is None or pd.isna(height) else int(height)
    return w, h


def guidance_of(entry: GeneratorEntry, guidance: Any) -> float:
    import math

    if guidance is None or (isinstance(guidance, float) and math.isnan(guidance)):
        return float(entry.guidance)
    return float(guidance)


def describe(names: Sequence[str]) -> list[str]:
    return [f"{n}: {get_generator(n).description}" for n in names]
