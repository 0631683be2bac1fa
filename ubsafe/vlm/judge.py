"""A VLM judge is an image classifier: prompts in, responses out, a vote over the prompts.

`VLMJudge.decide_images(images, categories, sample_ids)` asks every prompt about every image (the
paper's P0, P1, P2 with the definition of the image's category), labels each response with the
converter and votes (`ubsafe.vlm.decision`). Subclasses supply `generate(images, prompts)`: one
response per (image, prompt) pair, in batches of `batch_size`.

`TransformersJudge` is the shared machinery of the open models (LLaVA, InstructBLIP): the image goes
through the model's own processor into [0, 1] pixels, the normalisation happens inside the judge (so
attacks work in pixel space), prompts are left-padded as whole sequences, and decoding is greedy by
default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ubsafe.vlm import prompts as prompt_texts
from ubsafe.vlm.converter import ResponseConverter
from ubsafe.vlm.decision import VLMDecision, vote

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings. The default is the paper's LLaVA setting: greedy, up to 512 new tokens."""

    max_new_tokens: int = 512
    num_beams: int = 1
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "repetition_penalty": self.repetition_penalty,
            "do_sample": False,
            # A checkpoint's generation_config may carry sampling defaults; greedy ignores them.
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }
        if self.num_beams > 1:
            kwargs["length_penalty"] = self.length_penalty
        return kwargs


#: What LAVIS's `generate` did when the paper queried InstructBLIP (its defaults: 5 beams,
#: repetition penalty 1.5); ubsafe's default for every judge is greedy decoding.
INSTRUCTBLIP_PAPER_SETTINGS = GenerationSettings(num_beams=5, repetition_penalty=1.5)


def check_inputs(
    images: Sequence[Any], categories: Sequence[str], sample_ids: Sequence[str]
) -> None:
    """Refuse mismatched lengths and duplicate sample ids before any generation."""
    if not len(images) == len(categories) == len(sample_ids):
        raise ValueError(
            f"{len(images)} images, {len(categories)} categories and {len(sample_ids)} sample ids: "
            "pass one category and one sample id per image"
        )
    if len(set(sample_ids)) != len(sample_ids):
        seen: set[str] = set()
        dupes = [s for s in sample_ids if s in seen or seen.add(s)]  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate sample ids {dupes[:5]}: every image needs its own id")


class VLMJudge(ABC):
    """Prompts × images → responses → labels → one vote per image."""

    name: str = "vlm"

    def __init__(self, converter: ResponseConverter, *, seed: int = 0, batch_size: int = 8):
        self.converter = converter
        self.seed = seed
        self.batch_size = batch_size

    def prompts_for(self, category: str) -> tuple[str, ...]:
        """The prompts asked about an image collected for `category`."""
        return prompt_texts.judge_prompts(category)

    def general_prompts(self) -> tuple[str, ...]:
        """The prompts asked when no category applies: P0, the one without a definition.

        Used for images outside the taxonomy (external evaluation sets) and under perturbations,
        where the paper's robustness protocol judges by P0 alone.
        """
        return prompt_texts.judge_templates()[:1]

    def label_responses(self, responses: Sequence[str]) -> np.ndarray:
        """0/1/2 per response (the converter's labels)."""
        return self.converter.convert(responses)

    @property
    def converter_name(self) -> str:
        return self.converter.name

    @abstractmethod
    def generate(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[str]:
        """One response per (image, prompt) pair, for at most `batch_size` pairs."""

    def respond(
        self, images: Sequence[Image.Image], categories: Sequence[str]
    ) -> list[tuple[str, ...]]:
        """Every prompt's response for every image: N tuples of P strings."""
        return self.respond_to([self.prompts_for(c) for c in categories], images)

    def respond_to(
        self, per_image: Sequence[Sequence[str]], images: Sequence[Image.Image]
    ) -> list[tuple[str, ...]]:
        """The response to each image's own prompts (the same number for every image)."""
        n_prompts = len(per_image[0]) if per_image else 0
        if any(len(p) != n_prompts for p in per_image):
            raise ValueError("every image must be asked the same number of prompts")
        responses: list[list[str]] = [[""] * n_prompts for _ in images]
        # One prompt index at a time: the prompts of a batch have similar lengths (less padding).
        for p in range(n_prompts):
            for start in range(0, len(images), self.batch_size):
                stop = min(start + self.batch_size, len(images))
                batch_prompts = [per_image[i][p] for i in range(start, stop)]
                answers = self.generate(images[start:stop], batch_prompts)
                for i, answer in zip(range(start, stop), answers, strict=True):
                    responses[i][p] = answer
        return [tuple(r) for r in responses]

    def decide_responses(
        self, responses: Sequence[Sequence[str]], sample_ids: Sequence[str]
    ) -> VLMDecision:
        """Label and vote responses already generated (or replayed)."""
        flat = [text for row in responses for text in row]
        n_prompts = len(responses[0]) if responses else 0
        labels = self.label_responses(flat).reshape(len(responses), n_prompts)
        return vote(labels, sample_ids, responses, seed=self.seed, converter=self.converter_name)

    def decide_images(
        self,
        images: Sequence[Image.Image],
        categories: Sequence[str],
        sample_ids: Sequence[str],
    ) -> VLMDecision:
        """Decide on `images`, each collected for `categories[i]` and known as `sample_ids[i]`.

        Deterministic for a given seed: the only randomness, the tie-break of an "unsure" vote,
        is drawn from (seed, sample id).
        """
        check_inputs(images, categories, sample_ids)
        for category in set(categories):
            prompt_texts.definition(category)
        return self.decide_responses(self.respond(images, categories), sample_ids)

    def decide_general(
        self, images: Sequence[Image.Image], sample_ids: Sequence[str]
    ) -> VLMDecision:
        """Decide on `images` with `general_prompts()` only (no category definition)."""
        check_inputs(images, list(sample_ids), sample_ids)
        prompts = self.general_prompts()
        return self.decide_responses(self.respond_to([prompts] * len(images), images), sample_ids)


class TransformersJudge(VLMJudge):
    """Shared machinery of the open judges: pixels, normalisation, padding, generation, LM loss."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        converter: ResponseConverter,
        *,
        seed: int = 0,
        batch_size: int = 8,
        settings: GenerationSettings | None = None,
    ):
        import torch

        super().__init__(converter, seed=seed, batch_size=batch_size)
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.settings = settings or GenerationSettings()
        image_processor = processor.image_processor
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = getattr(model.config.get_text_config(), "pad_token_id", None)
        # Padded positions are masked out; any id will do when the checkpoint names none.
        self.pad_id: int = 0 if pad is None else int(pad)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.mean = torch.tensor(image_processor.image_mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(image_processor.image_std, device=self.device).view(1, 3, 1, 1)

    # --- pixels ---

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model's view of `images` in [0, 1] (resize, crop, pad as its processor does)."""
        out = self.processor.image_processor(
            images=list(images), do_normalize=False, return_tensors="pt"
        )
        return out["pixel_values"].to(self.device, dtype=self.mean.dtype)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels → the model's normalised input, differentiable, in the model's dtype."""
        return ((pixels - self.mean) / self.std).to(self.dtype)

    # --- text ---

    @abstractmethod
    def context_ids(self, prompt: str) -> list[int]:
        """Token ids of everything before the answer, image placeholders included."""

    def extra_inputs(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs besides input_ids / attention_mask / pixel_values (none by default)."""
        return {}

    def _pad_left(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            if seq:
                ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                mask[row, width - len(seq) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # --- generation ---

    def generate_from_pixels(self, pixels: torch.Tensor, prompts: Sequence[str]) -> list[str]:
        """Greedy (by default) answers to `prompts` about the [0, 1] `pixels`, one per row."""
        import torch

        ids, mask = self._pad_left([self.context_ids(p) for p in prompts])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                pixel_values=self.normalize(pixels),
                pad_token_id=self.pad_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **self.extra_inputs(prompts),
                **self.settings.generate_kwargs(),
            )
        new_tokens = out[:, ids.shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def generate(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[str]:
        return self.generate_from_pixels(self.pixels(images), prompts)

    # --- the language-model loss of a target answer (attacks, fine-tuning) ---

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of an answer as the model would write it after the prompt (no BOS)."""
        return list(self.tokenizer(answer, add_special_tokens=False)["input_ids"])

    def target_loss(
        self, pixels: torch.Tensor, prompts: Sequence[str], targets: Sequence[str]
    ) -> torch.Tensor:
        """Per-row mean cross-entropy of `targets[i]` given `prompts[i]` and `pixels[i]`: float[N].

        Rows are independent (no cross-row reduction), so a batch attack equals per-image attacks.
        """
        import torch

        contexts = [self.context_ids(p) for p in prompts]
        answers = [self.answer_ids(t) for t in targets]
        ids, mask = self._pad_left([c + a for c, a in zip(contexts, answers, strict=True)])
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=self.normalize(pixels),
            **self.extra_inputs(prompts),
        ).logits.float()
        losses = []
        width = ids.shape[1]
        for row, answer in enumerate(answers):
            n = len(answer)
            # Logits at position t predict token t + 1.
            pred = logits[row, width - n - 1 : width - 1]
            gold = ids[row, width - n :]
            losses.append(torch.nn.functional.cross_entropy(pred, gold))
        return torch.stack(losses)
