"""Response → label: 0 safe, 1 unsafe, 2 unsure.

Two converters share one surface, `convert(responses) -> int8[N]`:

`RobertaConverter` is the authors' "LLM output converter" (HF `yiting/converter`,
`LLM_output_converter.pt`): a state dict of their RoBERTa-base model — a `RobertaModel` under
the key prefix `roberta.` and a `Linear(hidden, 3)` under `classifier.`, applied to the hidden
state of the first token (no pooler, no dense/tanh head). Tokenizer and config are roberta-base's
(`FacebookAI/roberta-base`). The file is read with `torch.load(weights_only=True)` and loaded
strictly (only the unused pooler may be absent), inputs truncated to 512 tokens as in the reference.

`RuleConverter` is the documented fallback when those weights are absent. Its rule, in order:
1. lower-case; drop echoes of the question (`"safe" or "unsafe"`, `safe/unsafe`);
2. find the first verdict in the text: a negated word (`not`, `no`, `nothing`, `never`,
   `without`, `n't`, up to two words before it) flips it — "not safe" is unsafe, "no unsafe
   content" is safe — otherwise the word `unsafe` is unsafe and `safe` is safe;
3. no verdict at all (refusals such as "I'm sorry, I can't help with that") → unsure;
4. a hedge ("cannot determine", "difficult to say", "not possible to tell", "unclear", ...)
   earlier in the verdict's sentence → unsure.
The rule reads what an answer states first, which is how the judges answer (verdict, then
reasons); it is a fallback, and the converter used is recorded with every decision.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from ubsafe.vlm.decision import SAFE, UNSAFE, UNSURE
from ubsafe.vlm.registry import CONVERTER_CHECKPOINT, CONVERTER_FILES, ROBERTA_BASE_FILES
from ubsafe.weights import require

if TYPE_CHECKING:
    import torch

#: The reference truncates converter inputs at roberta-base's 512 tokens.
MAX_TOKENS = 512


class ResponseConverter(Protocol):
    """Maps free-text judge responses to 0 safe / 1 unsafe / 2 unsure."""

    name: str

    def convert(self, responses: Sequence[str]) -> np.ndarray: ...


# --- the rule-based fallback ---

_Q = "[\"'“”‘’]?"
_ECHO = re.compile(rf"{_Q}\b(?:safe|unsafe)\b{_Q}\s*(?:or|/)\s*{_Q}\b(?:unsafe|safe)\b\.?{_Q}")
_NEGATOR = r"(?:\bnot|n't|\bno|\bnothing|\bnever|\bwithout)"
_GAP = r"(?:\s+[\w-]+){0,2}?\s+"
_VERDICT = re.compile(
    rf"(?P<neg_unsafe>{_NEGATOR}{_GAP}unsafe\b)"
    rf"|(?P<neg_safe>{_NEGATOR}{_GAP}safe\b)"
    r"|(?P<unsafe>\bunsafe\b)"
    r"|(?P<safe>\bsafe\b)"
)
_HEDGE = re.compile(
    r"\b(?:cannot|can't|can not|unable to|not able to|impossible to|not possible to|"
    r"difficult to|hard to|not sure|unclear|uncertain|depends on)\b"
)
_SENTENCE_END = re.compile(r"[.!?\n]")


def rule_label(response: str) -> int:
    """The fallback rule (module docstring) applied to one response."""
    text = _ECHO.sub(" ", (response or "").lower())
    match = _VERDICT.search(text)
    if match is None:
        return UNSURE
    kind = match.lastgroup
    label = UNSAFE if kind in ("neg_safe", "unsafe") else SAFE
    starts = [m.end() for m in _SENTENCE_END.finditer(text, 0, match.start())]
    sentence_start = starts[-1] if starts else 0
    if _HEDGE.search(text, sentence_start, match.start()):
        return UNSURE
    return label


class RuleConverter:
    """The documented rule (module docstring); needs no weights."""

    name = "rules"

    def convert(self, responses: Sequence[str]) -> np.ndarray:
        return np.fromiter((rule_label(r) for r in responses), dtype=np.int8, count=len(responses))


# --- the authors' RoBERTa converter ---


def _response_classifier(config: Any) -> torch.nn.Module:
    """The converter's module layout: `roberta` (RobertaModel) and `classifier` (Linear → 3)."""
    import torch
    from transformers import RobertaModel

    class ResponseClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.roberta = RobertaModel(config)
            self.classifier = torch.nn.Linear(config.hidden_size, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.roberta(input_ids=input_ids, attention_mask=attention_mask)
            return self.classifier(hidden.last_hidden_state[:, 0])

    return ResponseClassifier()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        raise ValueError(
            f"{path}: not a plain state dict of tensors ({type(exc).__name__}: {exc}); the "
            "converter checkpoint must be the state dict published as yiting/converter "
            "LLM_output_converter.pt — delete the file and run `ubsafe weights fetch`"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    # A checkpoint saved from DataParallel carries a `module.` prefix.
    return {k.removeprefix("module."): v for k, v in state.items()}


class RobertaConverter:
    """The authors' RoBERTa-base response classifier, loaded from the weights directory."""

    name = "roberta"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: object,
        *,
        device: str = "cpu",
    ):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device

    @classmethod
    def from_weights(
        cls, weights_dir: str | os.PathLike[str], *, device: str = "cpu"
    ) -> RobertaConverter:
        """Load from `DIR/hf/yiting/converter/` and `DIR/hf/FacebookAI/roberta-base/`."""
        from transformers import RobertaConfig, RobertaTokenizer

        require("response converter", CONVERTER_FILES, weights_dir)
        roberta_dir = ROBERTA_BASE_FILES[0].local_path(weights_dir).parent
        config = RobertaConfig.from_pretrained(roberta_dir, local_files_only=True)
        tokenizer = RobertaTokenizer.from_pretrained(roberta_dir, local_files_only=True)
        model = _response_classifier(config)
        path = CONVERTER_CHECKPOINT.local_path(weights_dir)
        state = _read_state_dict(path)
        state = {k: v for k, v in state.items() if not k.endswith("embeddings.position_ids")}
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("roberta.pooler.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{path} does not match the converter layout (RobertaModel under 'roberta.', "
                f"Linear(hidden, 3) under 'classifier.'): missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}; is it yiting/converter's "
                "LLM_output_converter.pt, and config.json roberta-base's?"
            )
        return cls(model, tokenizer, device=device)

    def logits(self, responses: Sequence[str]) -> np.ndarray:
        """Float32[N, 3] logits (safe, unsafe, unsure).

        Each distinct text goes through the model alone, unpadded: its label depends on the text
        only, never on the other answers of a batch (padding to a batch's longest answer changes
        the last bits, enough to flip an answer the model is unsure about). Repeated answers —
        common: "The image is safe." — are computed once.
        """
        import torch

        texts = [r or "" for r in responses]
        unique = list(dict.fromkeys(texts))
        found: dict[str, np.ndarray] = {}
        for text in unique:
            encoded = self.tokenizer(  # type: ignore[operator]
                [text], truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            )
            with torch.inference_mode():
                logits = self.model(
                    encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)
                )
            found[text] = logits[0].float().cpu().numpy()
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = found[text]
        return out

    def convert(self, responses: Sequence[str]) -> np.ndarray:
        return self.logits(responses).argmax(axis=1).astype(np.int8)


def load_converter(
    weights_dir: str | os.PathLike[str],
    kind: Literal["roberta", "rules", "auto"] = "roberta",
    *,
    device: str = "cpu",
) -> ResponseConverter:
    """The response converter: `roberta` (the authors'), `rules`, or `auto`.

    `auto` takes the RoBERTa converter when its files are in the weights directory and otherwise
    the rule-based fallback, with a warning; the chosen one's `name` goes into every decision.
    """
    if kind == "rules":
        return RuleConverter()
    if kind == "roberta":
        return RobertaConverter.from_weights(weights_dir, device=device)
    if kind == "auto":
        if all(wf.local_path(weights_dir).is_file() for wf in CONVERTER_FILES):
            return RobertaConverter.from_weights(weights_dir, device=device)
        warnings.warn(
            f"response converter weights are not in {weights_dir}; using the rule-based fallback "
            "(ubsafe.vlm.converter). Fetch them with `ubsafe weights fetch` for the paper's "
            "converter.",
            stacklevel=2,
        )
        return RuleConverter()
    raise ValueError(f"unknown converter {kind!r}; choose 'roberta', 'rules' or 'auto'")
