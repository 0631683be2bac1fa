"""InstructBLIP (Vicuna-7B) as a judge, from the transformers checkpoint
`Salesforce/instructblip-vicuna-7b`.

As LAVIS's `blip2_vicuna_instruct` ran it for the paper: the raw prompt (no conversation template)
goes both to the Q-Former (truncated at 128 tokens, LAVIS's `max_txt_len`) and, after the query
embeddings and BOS, to the language model; images are resized to 224 × 224 without crop. Decoding
is greedy by default; `INSTRUCTBLIP_PAPER_SETTINGS` reproduces LAVIS's beam search.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ubsafe.vlm.converter import ResponseConverter
from ubsafe.vlm.judge import GenerationSettings, TransformersJudge
from ubsafe.vlm.llava import resolve_device, resolve_dtype
from ubsafe.vlm.registry import INSTRUCTBLIP_REPO, require_transformers_repo
from ubsafe.weights import offline_hub

if TYPE_CHECKING:
    import torch

#: LAVIS truncates the Q-Former's instruction at this many tokens.
QFORMER_MAX_TOKENS = 128


class InstructBlipJudge(TransformersJudge):
    """InstructBLIP answering the paper's prompts."""

    name = "instructblip"

    def __init__(self, model: Any, processor: Any, converter: ResponseConverter, **kwargs: Any):
        super().__init__(model, processor, converter, **kwargs)
        self.qformer_tokenizer = processor.qformer_tokenizer
        self.image_token_id = getattr(model.config, "image_token_index", None)
        if self.image_token_id is None:
            raise ValueError(
                "this InstructBLIP checkpoint's config.json has no image_token_index (an old "
                "revision); fetch the current Salesforce/instructblip-vicuna-7b with "
                "`ubsafe weights fetch`"
            )
        self.n_query_tokens = model.config.num_query_tokens

    def context_ids(self, prompt: str) -> list[int]:
        text_ids = list(self.tokenizer(prompt)["input_ids"])
        return [self.image_token_id] * self.n_query_tokens + text_ids

    def extra_inputs(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = self.qformer_tokenizer(
            list(prompts),
            padding="longest",
            truncation=True,
            max_length=QFORMER_MAX_TOKENS,
            return_tensors="pt",
        )
        return {
            "qformer_input_ids": encoded["input_ids"].to(self.device),
            "qformer_attention_mask": encoded["attention_mask"].to(self.device),
        }


def load_instructblip(
    weights_dir: str | os.PathLike[str],
    converter: ResponseConverter,
    *,
    repo: str = INSTRUCTBLIP_REPO,
    device: str = "auto",
    dtype: str | None = None,
    seed: int = 0,
    batch_size: int = 8,
    settings: GenerationSettings | None = None,
) -> InstructBlipJudge:
    """An InstructBLIP judge from `DIR/hf/<repo>`, with the hub offline."""
    from transformers import AutoProcessor, InstructBlipForConditionalGeneration

    folder = require_transformers_repo("instructblip", weights_dir, repo)
    offline_hub()
    device = resolve_device(device)
    model: Any = InstructBlipForConditionalGeneration.from_pretrained(
        folder, local_files_only=True, dtype=resolve_dtype(device, dtype)
    )
    model = model.to(device)
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return InstructBlipJudge(
        model, processor, converter, seed=seed, batch_size=batch_size, settings=settings
    )
