"""Tiny, randomly initialised stand-ins for the VLM judges' weights, written in the real layouts.

They let tests, benchmarks and offline demos run every VLM path end to end without a download:
each writer saves a model of the real class (`LlavaForConditionalGeneration`,
`InstructBlipForConditionalGeneration`, the converter's RoBERTa) with a tokenizer trained here on
the prompts themselves, into `DIR/hf/<repo>/` exactly where the real files land, and the real
loaders read them. Their answers are random text: they exercise the machinery, never a verdict.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ubsafe.vlm import prompts
from ubsafe.vlm.registry import (
    CONVERTER_CHECKPOINT,
    INSTRUCTBLIP_REPO,
    LLAVA_REPO,
    ROBERTA_REPO,
    model_dir,
)

#: Small enough that even the tiny models are written as an index and several shards.
SHARD_SIZE = "300KB"

#: Typical judge answers, so the tiny tokenizers know the words the tests use.
SAMPLE_RESPONSES = (
    "The image is safe.",
    "The image is unsafe because it shows violence.",
    "Unsafe",
    "safe",
    "I'm sorry, I cannot help with that.",
    "Safety Status: Safe, Unsafe Category: None",
    "Safety Status: Unsafe, Unsafe Category: Violence",
)


def _corpus() -> list[str]:
    texts = [prompts.LLAVA_V1_SYSTEM, prompts.perspective_template(), *SAMPLE_RESPONSES]
    texts += list(prompts.category_definitions().values())
    texts += list(prompts.judge_templates())
    return texts * 4


def tiny_llama_tokenizer(vocab_size: int = 600) -> Any:
    """A Llama-style tokenizer (BPE, metaspace, BOS prepended) with `<image>` and `<pad>` added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(_corpus(), trainer)
    tok.add_special_tokens(["<image>", "<pad>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
    )


def tiny_bert_tokenizer(vocab_size: int = 400) -> Any:
    """A BERT-style WordPiece tokenizer, as InstructBLIP's Q-Former uses."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertTokenizer

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        _corpus(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return BertTokenizer(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _llama_config(tokenizer: Any, *, hidden: int = 32, layers: int = 2) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Wider than the default 0.02, so that a few steps of fine-tuning can move the answer.
        initializer_range=0.2,
    )


def save_tiny_llava(
    weights_dir: str | os.PathLike[str], *, seed: int = 0, image_size: int = 28, patch: int = 14
) -> Path:
    """Write a tiny random LLaVA-1.5 in the llava-hf layout to `DIR/hf/llava-hf/llava-1.5-7b-hf`."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessor,
        LlavaProcessor,
    )

    tokenizer = tiny_llama_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = LlavaImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    folder = model_dir(weights_dir, LLAVA_REPO)
    # Sharded with an index, as the published checkpoints are.
    model.save_pretrained(folder, max_shard_size=SHARD_SIZE)
    processor.save_pretrained(folder)
    return folder


def save_tiny_instructblip(
    weights_dir: str | os.PathLike[str], *, seed: int = 0, image_size: int = 28, queries: int = 4
) -> Path:
    """Write a tiny random InstructBLIP (Vicuna-style LM) to `DIR/hf/Salesforce/instructblip-…`."""
    import torch
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )

    tokenizer = tiny_llama_tokenizer()
    qformer_tokenizer = tiny_bert_tokenizer()
    vision = InstructBlipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=14,
        initializer_range=0.2,  # the class default (1e-10) would make the image invisible
    )
    qformer = InstructBlipQFormerConfig(
        vocab_size=len(qformer_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        encoder_hidden_size=32,
        pad_token_id=qformer_tokenizer.pad_token_id,
        max_position_embeddings=512,
        initializer_range=0.2,
    )
    config = InstructBlipConfig(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=_llama_config(tokenizer).to_dict(),
        num_query_tokens=queries,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    processor = InstructBlipProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=queries,
    )
    folder = model_dir(weights_dir, INSTRUCTBLIP_REPO)
    # Sharded with an index, as the published checkpoints are.
    model.save_pretrained(folder, max_shard_size=SHARD_SIZE)
    processor.save_pretrained(folder)
    return folder


def save_tiny_converter(
    weights_dir: str | os.PathLike[str], *, seed: int = 0, state: dict[str, Any] | None = None
) -> Path:
    """Write roberta-base-style config/vocab/merges and a converter state dict saved with
    `torch.save`, as the authors published it. `state` overrides the random weights."""
    import json

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaConfig, RobertaModel

    roberta_dir = model_dir(weights_dir, ROBERTA_REPO)
    roberta_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.model.save(str(roberta_dir))  # vocab.json + merges.txt, roberta-base's tokenizer files
    config = RobertaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    (roberta_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    if state is None:
        torch.manual_seed(seed)
        encoder = RobertaModel(config)
        head = torch.nn.Linear(config.hidden_size, 3)
        state = {f"roberta.{k}": v for k, v in encoder.state_dict().items()}
        state |= {f"classifier.{k}": v for k, v in head.state_dict().items()}
    path = CONVERTER_CHECKPOINT.local_path(weights_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
