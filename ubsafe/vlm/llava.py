"""LLaVA-1.5 as a judge, from the llava-hf checkpoint (`llava-hf/llava-1.5-7b-hf`).

Faithful to how the paper queried `liuhaotian/llava-v1.5-7b`: the `llava_v1` conversation (system
line, `USER: <image>\\n<prompt> ASSISTANT:`), the image padded to a square with the mean colour
before resize and crop (`image_aspect_ratio = pad`), greedy decoding up to 512 new tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ubsafe.vlm import prompts
from ubsafe.vlm.converter import ResponseConverter
from ubsafe.vlm.judge import GenerationSettings, TransformersJudge
from ubsafe.vlm.registry import LLAVA_REPO, require_transformers_repo
from ubsafe.weights import offline_hub

if TYPE_CHECKING:
    import torch
    from PIL import Image


def pad_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """`image` centred on a square canvas of its longer side, filled with `fill` (LLaVA's `pad`)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(device: str, dtype: str | None) -> Any:
    """float16 on GPUs (as the paper ran), float32 on CPUs, unless `dtype` says otherwise."""
    import torch

    if dtype is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class LlavaJudge(TransformersJudge):
    """LLaVA-1.5 answering the paper's prompts."""

    name = "llava"

    def __init__(self, model: Any, processor: Any, converter: ResponseConverter, **kwargs: Any):
        super().__init__(model, processor, converter, **kwargs)
        config = model.config
        self.image_token = getattr(processor, "image_token", "<image>")
        patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
        # "default" drops the CLS token's feature, "full" keeps it.
        self.n_image_tokens = patches + (
            1 if config.vision_feature_select_strategy == "full" else 0
        )

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Padded to a square with the mean colour, then the processor's resize and crop."""
        fill = tuple(int(v * 255) for v in self.processor.image_processor.image_mean)
        return super().pixels([pad_to_square(image, fill) for image in images])

    def conversation(self, prompt: str) -> str:
        """`prompt` wrapped as LLaVA-1.5 was prompted (one `<image>` placeholder)."""
        return prompts.llava_conversation(prompt, image_token=self.image_token)

    def context_ids(self, prompt: str) -> list[int]:
        text = self.conversation(prompt).replace(
            self.image_token, self.image_token * self.n_image_tokens
        )
        return list(self.tokenizer(text)["input_ids"])


def load_llava_parts(
    weights_dir: str | os.PathLike[str],
    *,
    repo: str = LLAVA_REPO,
    device: str = "auto",
    dtype: str | None = None,
) -> tuple[Any, Any]:
    """The llava-hf model and processor from `DIR/hf/<repo>`, with the hub offline."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    folder = require_transformers_repo("llava", weights_dir, repo)
    offline_hub()
    device = resolve_device(device)
    model: Any = LlavaForConditionalGeneration.from_pretrained(
        folder, local_files_only=True, dtype=resolve_dtype(device, dtype)
    )
    model = model.to(device)
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    processor.tokenizer.padding_side = "left"
    return model, processor


def load_llava(
    weights_dir: str | os.PathLike[str],
    converter: ResponseConverter,
    *,
    repo: str = LLAVA_REPO,
    device: str = "auto",
    dtype: str | None = None,
    seed: int = 0,
    batch_size: int = 8,
    settings: GenerationSettings | None = None,
) -> LlavaJudge:
    """A LLaVA judge from the weights directory (see `load_llava_parts`)."""
    model, processor = load_llava_parts(weights_dir, repo=repo, device=device, dtype=dtype)
    return LlavaJudge(
        model, processor, converter, seed=seed, batch_size=batch_size, settings=settings
    )
