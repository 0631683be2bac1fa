"""One entry point for the stages: a VLM judge's model, loaded by its registry entry's `loader`.

`LOADERS` maps a loader name (the `[judge] loader` of a registry entry) to the function that builds
the judge; `load_judge` accepts a loader name or the name of a judge in the classifier registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ubsafe.vlm.judge import GenerationSettings, VLMJudge

if TYPE_CHECKING:
    from ubsafe.vlm.openai_client import ChatSettings


@dataclass(frozen=True)
class LoadRequest:
    """Everything a loader may use; each takes what it needs."""

    weights_dir: Path
    converter: Literal["roberta", "rules", "auto"]
    device: str
    dtype: str | None
    seed: int
    batch_size: int
    settings: GenerationSettings | None
    cache_dir: Path | None
    adapter_dir: Path | None
    chat: ChatSettings | None


def _response_converter(request: LoadRequest, *, on_device: bool) -> Any:
    from ubsafe.vlm.converter import load_converter
    from ubsafe.vlm.llava import resolve_device

    if on_device:
        return load_converter(
            request.weights_dir, request.converter, device=resolve_device(request.device)
        )
    return load_converter(request.weights_dir, request.converter)


def _open_model_kwargs(request: LoadRequest) -> dict[str, Any]:
    return {
        "device": request.device,
        "dtype": request.dtype,
        "seed": request.seed,
        "batch_size": request.batch_size,
        "settings": request.settings,
    }


def _llava(request: LoadRequest) -> VLMJudge:
    from ubsafe.vlm.llava import load_llava

    converter = _response_converter(request, on_device=True)
    return load_llava(request.weights_dir, converter, **_open_model_kwargs(request))


def _instructblip(request: LoadRequest) -> VLMJudge:
    from ubsafe.vlm.instructblip import load_instructblip

    converter = _response_converter(request, on_device=True)
    return load_instructblip(request.weights_dir, converter, **_open_model_kwargs(request))


def _chat(request: LoadRequest) -> VLMJudge:
    from ubsafe.vlm.openai_client import ChatClient, ChatJudge

    converter = _response_converter(request, on_device=False)
    client = ChatClient.from_env(request.chat, cache_dir=request.cache_dir)
    return ChatJudge(client, converter, seed=request.seed, batch_size=request.batch_size)


def _perspective(request: LoadRequest) -> VLMJudge:
    from ubsafe.perspective.lora import load_perspective

    if request.adapter_dir is None:
        raise ValueError(
            "perspective-llava needs adapter_dir: the folder written by the PerspectiveVision "
            "fine-tuning job, or a converted yiting/PerspectiveVision-LLaVA-LoRA"
        )
    judge: VLMJudge = load_perspective(
        request.weights_dir, request.adapter_dir, **_open_model_kwargs(request)
    )
    return judge


#: loader name (`[judge] loader` in the classifier registry) → the function that builds the judge
LOADERS: dict[str, Callable[[LoadRequest], VLMJudge]] = {
    "llava": _llava,
    "instructblip": _instructblip,
    "chat": _chat,
    "perspective": _perspective,
}


def loader_of(name: str) -> str:
    """The loader for `name`: a loader name itself, or a registry judge's `[judge] loader`."""
    if name in LOADERS:
        return name
    from ubsafe.classifiers import get_entry

    try:
        judge = get_entry(name).judge
    except KeyError:
        judge = None
    if judge is None:
        judges = ", ".join(sorted(LOADERS))
        raise ValueError(f"unknown VLM judge {name!r}; choose a registry judge or one of {judges}")
    return judge.loader


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
    """The judge `name` (a loader of `LOADERS`, or a registry judge), ready for `decide_images`.

    `converter` picks the response converter (the authors' RoBERTa by default); `cache_dir` is the
    response cache of a queried endpoint and `chat` its model, decoding and rate; `adapter_dir` the
    LoRA adapter of a judge whose entry needs one.
    """
    request = LoadRequest(
        weights_dir=Path(weights_dir),
        converter=converter,
        device=device,
        dtype=dtype,
        seed=seed,
        batch_size=batch_size,
        settings=settings,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        adapter_dir=Path(adapter_dir) if adapter_dir is not None else None,
        chat=chat,
    )
    return LOADERS[loader_of(name)](request)
