"""One entry point for the stages: a VLM judge by name, loaded from the weights directory."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from ubsafe.vlm.judge import GenerationSettings, VLMJudge

if TYPE_CHECKING:
    from ubsafe.vlm.openai_client import ChatSettings

#: The judges `load_judge` knows; `gpt4v` queries an OpenAI-compatible endpoint (see
#: `openai_client`), the published GPT-4V answers are replayed by `replay` instead.
JUDGES: tuple[str, ...] = ("llava", "instructblip", "gpt4v", "perspective-llava")


def load_judge(
    name: str,
    weights_dir: str | os.PathLike[str],
    *,
    converter: Literal["roberta", "rules", "auto"] = "roberta",
    device: str = "auto",
    dtype: str | None = None,
    seed: int = 0,
    batch_size: int = 8,
    settings: GenerationSettings | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    adapter_dir: str | os.PathLike[str] | None = None,
    chat: ChatSettings | None = None,
) -> VLMJudge:
    """The judge `name` (one of `JUDGES`), ready for `decide_images`.

    `converter` picks the response converter (the authors' RoBERTa by default); `cache_dir` is the
    response cache of `gpt4v` and `chat` its model, decoding and rate; `adapter_dir` the LoRA
    adapter of `perspective-llava`.
    """
    if name not in JUDGES:
        raise ValueError(f"unknown VLM judge {name!r}; choose one of {', '.join(JUDGES)}")
    from ubsafe.vlm.converter import load_converter

    if name == "perspective-llava":
        from ubsafe.vlm.perspective.lora import load_perspective

        if adapter_dir is None:
            raise ValueError(
                "perspective-llava needs adapter_dir: the folder written by the PerspectiveVision "
                "fine-tuning job, or a converted yiting/PerspectiveVision-LLaVA-LoRA"
            )
        judge: VLMJudge = load_perspective(
            weights_dir,
            adapter_dir,
            device=device,
            dtype=dtype,
            seed=seed,
            batch_size=batch_size,
            settings=settings,
        )
        return judge
    if name == "gpt4v":
        from ubsafe.vlm.openai_client import ChatClient, ChatJudge

        response_converter = load_converter(weights_dir, converter)
        client = ChatClient.from_env(chat, cache_dir=cache_dir)
        return ChatJudge(client, response_converter, seed=seed, batch_size=batch_size)
    from ubsafe.vlm.llava import resolve_device

    response_converter = load_converter(weights_dir, converter, device=resolve_device(device))
    if name == "llava":
        from ubsafe.vlm.llava import load_llava

        return load_llava(
            weights_dir,
            response_converter,
            device=device,
            dtype=dtype,
            seed=seed,
            batch_size=batch_size,
            settings=settings,
        )
    from ubsafe.vlm.instructblip import load_instructblip

    return load_instructblip(
        weights_dir,
        response_converter,
        device=device,
        dtype=dtype,
        seed=seed,
        batch_size=batch_size,
        settings=settings,
    )
