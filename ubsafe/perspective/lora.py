"""LoRA fine-tuning of LLaVA-1.5 into PerspectiveVision, through peft, on the llava-hf model class.

The recipe is the paper's (`PerspectiveVision/train_llava.sh`): LoRA r = 128, alpha = 256 on every
linear layer of the language model (LLaVA's `find_all_linear_names`: not the vision tower, not the
projector, not the LM head), the projector trained in full at its own learning rate 2e-5, AdamW at
2e-4 with weight decay 0, cosine schedule with 3 % warm-up, one epoch, batches of 8 with gradient
accumulation 2, sequences cut at 2048 tokens. The loss is on the answer only (the `llava_v1`
conversation masks the human turn): the answer's tokens and the closing `</s>`.

Adapters are saved in peft's format (`adapter_config.json`, `adapter_model.safetensors`);
`convert_llava_adapter` rewrites an adapter trained with the original LLaVA code base (such as the
authors' `yiting/PerspectiveVision-LLaVA-LoRA`) into this model's names.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ubsafe import atomic
from ubsafe.perspective.trainset import TrainingExample

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ubsafe.vlm.judge import GenerationSettings
    from ubsafe.vlm.llava import LlavaJudge

#: LoRA targets: the language model's linear layers (attention and MLP), as LLaVA selects them.
LM_LINEAR_LAYERS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
PROJECTOR = "multi_modal_projector"


@dataclass(frozen=True)
class LoraSettings:
    """The paper's recipe by default; `max_steps` cuts a run short (tests, smoke runs)."""

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    learning_rate: float = 2e-4
    projector_learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 2
    max_length: int = 2048
    max_steps: int | None = None
    gradient_checkpointing: bool = False
    seed: int = 0


@dataclass
class TrainReport:
    """What a fine-tuning run did: optimizer steps, the loss of each, the examples seen."""

    steps: int
    losses: list[float]
    examples_seen: int
    settings: dict[str, Any]


def add_lora(model: Any, settings: LoraSettings) -> Any:
    """Wrap a llava-hf model with LoRA adapters (frozen base, trainable projector)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=LM_LINEAR_LAYERS,
        modules_to_save=[PROJECTOR],
        bias="none",
    )
    return get_peft_model(model, config)


def _sequence(
    judge: LlavaJudge, example: TrainingExample, max_length: int
) -> tuple[list[int], int]:
    """Token ids of prompt + answer + EOS, and how many trailing tokens carry the loss."""
    context = judge.context_ids(example.prompt)
    answer = [*judge.answer_ids(example.answer), judge.tokenizer.eos_token_id]
    ids = (context + answer)[:max_length]
    return ids, max(0, len(ids) - len(context))


def _batch_loss(
    model: Any,
    judge: LlavaJudge,
    batch: Sequence[TrainingExample],
    load_image: Callable[[str], Image.Image],
    max_length: int,
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the answer tokens of a batch, and the number of such tokens."""
    import torch

    sequences = [_sequence(judge, e, max_length) for e in batch]
    ids, mask = judge._pad_left([s for s, _ in sequences])
    pixels = judge.pixels([load_image(e.sample_id) for e in batch])
    logits = model(input_ids=ids, attention_mask=mask, pixel_values=judge.normalize(pixels)).logits
    width = ids.shape[1]
    total = logits.new_zeros((), dtype=torch.float32)
    count = 0
    for row, (_, n_answer) in enumerate(sequences):
        if n_answer == 0:
            continue
        pred = logits[row, width - n_answer - 1 : width - 1].float()
        gold = ids[row, width - n_answer :]
        total = total + torch.nn.functional.cross_entropy(pred, gold, reduction="sum")
        count += n_answer
    return total, count


def train_lora(
    judge: LlavaJudge,
    examples: Sequence[TrainingExample],
    load_image: Callable[[str], Image.Image],
    settings: LoraSettings | None = None,
    *,
    log: Callable[[int, float], None] | None = None,
) -> tuple[Any, TrainReport]:
    """Fine-tune `judge.model` with LoRA on `examples`; return the peft model and a report.

    `load_image(sample_id)` returns the image of an example. Examples are visited in a seeded
    random order per epoch; each optimizer step averages the loss over the answer tokens of
    `batch_size × grad_accum` examples.
    """
    import torch
    from transformers import get_cosine_schedule_with_warmup

    settings = settings or LoraSettings()
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(settings.seed)
    model = add_lora(judge.model, settings)
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model.train()
    lora_params = [p for n, p in model.named_parameters() if p.requires_grad and PROJECTOR not in n]
    projector_params = [
        p for n, p in model.named_parameters() if p.requires_grad and PROJECTOR in n
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": settings.learning_rate},
            {"params": projector_params, "lr": settings.projector_learning_rate},
        ],
        weight_decay=settings.weight_decay,
    )
    per_step = settings.batch_size * settings.grad_accum
    steps_per_epoch = math.ceil(len(examples) / per_step)
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(settings.warmup_ratio * total_steps), total_steps
    )
    generator = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    seen = 0
    step = 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), per_step):
            if step >= total_steps:
                break
            chunk = [examples[i] for i in order[start : start + per_step]]
            micro = [
                chunk[i : i + settings.batch_size]
                for i in range(0, len(chunk), settings.batch_size)
            ]
            results = []
            n_tokens = 0
            for batch in micro:
                loss_sum, count = _batch_loss(model, judge, batch, load_image, settings.max_length)
                n_tokens += count
                results.append(loss_sum)
            # Token-averaged over the whole optimizer step, whatever the micro-batch split.
            loss = torch.stack(results).sum() / max(n_tokens, 1)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            seen += len(chunk)
            step += 1
            if log is not None:
                log(step, losses[-1])
    model.eval()
    report = TrainReport(steps=step, losses=losses, examples_seen=seen, settings=asdict(settings))
    return model, report


def save_adapter(
    model: Any, folder: str | os.PathLike[str], report: TrainReport | None = None
) -> Path:
    """Save the adapter in peft's format (and the training report beside it)."""
    folder = Path(folder)
    model.save_pretrained(folder)
    if report is not None:
        atomic.write_text(folder / "train_report.json", json.dumps(asdict(report), indent=2))
    return folder


def apply_adapter(model: Any, adapter_dir: str | os.PathLike[str]) -> Any:
    """Load a peft adapter onto a llava-hf model and merge it in (inference needs no peft)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{adapter_dir} holds no adapter_config.json; pass the folder written by "
            "save_adapter, or convert an original LLaVA adapter with convert_llava_adapter"
        )
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=False).merge_and_unload()


def load_perspective(
    weights_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    dtype: str | None = None,
    seed: int = 0,
    batch_size: int = 8,
    listed: Sequence[str] | None = None,
    settings: GenerationSettings | None = None,
) -> Any:
    """A PerspectiveVision judge: LLaVA-1.5 from the weights directory with the adapter merged.

    Decoding is greedy up to 512 new tokens (eval.py's) unless `settings` say otherwise.
    """
    from ubsafe.perspective.evaluate import PerspectiveJudge
    from ubsafe.taxonomy import CATEGORIES
    from ubsafe.vlm.llava import load_llava_parts

    model, processor = load_llava_parts(weights_dir, device=device, dtype=dtype)
    model = apply_adapter(model, adapter_dir)
    return PerspectiveJudge(
        model,
        processor,
        listed=tuple(listed or CATEGORIES),
        seed=seed,
        batch_size=batch_size,
        settings=settings,
    )


# --- adapters trained with the original LLaVA code base ---

_LLAVA_KEYS = (
    # (original LLaVA name, llava-hf name)
    (
        re.compile(r"^base_model\.model\.model\.layers\."),
        "base_model.model.model.language_model.layers.",
    ),
    (
        re.compile(r"^base_model\.model\.model\.embed_tokens\."),
        "base_model.model.model.language_model.embed_tokens.",
    ),
    (
        re.compile(r"^base_model\.model\.model\.norm\."),
        "base_model.model.model.language_model.norm.",
    ),
)
_PROJECTOR_KEYS = (
    (re.compile(r"^(?:base_model\.model\.)?model\.mm_projector\.0\."), "linear_1."),
    (re.compile(r"^(?:base_model\.model\.)?model\.mm_projector\.2\."), "linear_2."),
)


def _rename(key: str, table: Sequence[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, replacement in table:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    return None


def convert_llava_adapter(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Rewrite an original-LLaVA LoRA folder (adapter_config.json, adapter_model.{bin,safetensors},
    non_lora_trainables.bin) into a peft adapter for the llava-hf model class.

    LoRA weights move from `model.layers.*` to `model.language_model.layers.*`; the projector's full
    weights (`mm_projector.0/2`) become the adapter's saved `multi_modal_projector.linear_1/2`;
    target modules become the language model's linear layers only (in llava-hf the vision tower's
    attention shares their leaf names).
    """
    import torch
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    config = json.loads((src / "adapter_config.json").read_text())
    if (src / "adapter_model.safetensors").is_file():
        weights = load_file(src / "adapter_model.safetensors")
    elif (src / "adapter_model.bin").is_file():
        weights = torch.load(src / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{src}: no adapter_model.safetensors or adapter_model.bin")
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in weights.items():
        new = _rename(key, _LLAVA_KEYS)
        if new is None:
            unknown.append(key)
        else:
            converted[new] = value.contiguous()
    projector_file = src / "non_lora_trainables.bin"
    if projector_file.is_file():
        extra = torch.load(projector_file, map_location="cpu", weights_only=True)
        for key, value in extra.items():
            leaf = _rename(key, _PROJECTOR_KEYS)
            if leaf is None:
                unknown.append(key)
            else:
                converted[f"base_model.model.model.{PROJECTOR}.{leaf}"] = value.contiguous()
    if unknown:
        raise ValueError(
            f"{src}: {len(unknown)} tensors have names this converter does not know "
            f"(first: {unknown[:3]}); it expects LLaVA-1.5 LoRA adapters"
        )
    config["target_modules"] = LM_LINEAR_LAYERS
    if projector_file.is_file():
        config["modules_to_save"] = [PROJECTOR]
    config.pop("base_model_name_or_path", None)
    dst.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(dst / "adapter_model.safetensors") as tmp:
        save_file(converted, str(tmp), metadata={"format": "pt"})
    atomic.write_text(dst / "adapter_config.json", json.dumps(config, indent=2))
    return dst


def fine_tune(
    weights_dir: str | os.PathLike[str],
    rows: Any,
    load_image: Callable[[str], Image.Image],
    out_dir: str | os.PathLike[str],
    *,
    settings: LoraSettings | None = None,
    device: str = "auto",
    dtype: str | None = None,
    sources: Sequence[str] | None = None,
) -> Path:
    """The PerspectiveVision training job: training set → LoRA fine-tuning → adapter folder.

    `rows` is the train split (sample_id, label, category, source, in dataset order); `sources`
    the order in which the training set takes the sources (default UnsafeBench's). The adapter,
    the training conversations and the report appear in `out_dir` all at once (the folder is
    written under a temporary name and renamed), so a killed job leaves nothing that looks done;
    a finished one is not redone.
    """
    import shutil
    import uuid

    from ubsafe.perspective.trainset import build_training_set, write_training_json
    from ubsafe.vlm.converter import RuleConverter
    from ubsafe.vlm.llava import LlavaJudge, load_llava_parts

    out_dir = Path(out_dir)
    if (out_dir / "adapter_config.json").is_file():
        return out_dir
    settings = settings or LoraSettings()
    if sources is None:
        examples = build_training_set(rows, seed=settings.seed)
    else:
        examples = build_training_set(rows, seed=settings.seed, sources=tuple(sources))
    model, processor = load_llava_parts(weights_dir, device=device, dtype=dtype)
    judge = LlavaJudge(model, processor, RuleConverter())
    peft_model, report = train_lora(judge, examples, load_image, settings)
    tmp = out_dir.parent / f"{atomic.TMP_PREFIX}{uuid.uuid4().hex}-{out_dir.name}"
    try:
        save_adapter(peft_model, tmp, report)
        write_training_json(examples, tmp / "training_prompts.json")
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
