"""Where the VLM judges' weights live: Hugging Face repositories and the files that
`ubsafe weights fetch` downloads into `DIR/hf/<repo>/`. Light on purpose (no torch), so the CLI
can list them at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ubsafe.weights import MissingWeightsError, WeightFile

LLAVA_REPO = "llava-hf/llava-1.5-7b-hf"
INSTRUCTBLIP_REPO = "Salesforce/instructblip-vicuna-7b"
CONVERTER_REPO = "yiting/converter"
ROBERTA_REPO = "FacebookAI/roberta-base"
PERSPECTIVE_LORA_REPO = "yiting/PerspectiveVision-LLaVA-LoRA"
RESPONSES_REPO = "yiting/unsafebench_vlm_responses"


def _files(repo: str, names: tuple[str, ...]) -> tuple[WeightFile, ...]:
    return tuple(WeightFile(repo, name) for name in names)


LLAVA_FILES = _files(
    LLAVA_REPO,
    (
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "preprocessor_config.json",
        "processor_config.json",
        "added_tokens.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
    ),
)

INSTRUCTBLIP_FILES = _files(
    INSTRUCTBLIP_REPO,
    (
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "model-00001-of-00004.safetensors",
        "model-00002-of-00004.safetensors",
        "model-00003-of-00004.safetensors",
        "model-00004-of-00004.safetensors",
        "preprocessor_config.json",
        "processor_config.json",
        "added_tokens.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "qformer_tokenizer/special_tokens_map.json",
        "qformer_tokenizer/tokenizer.json",
        "qformer_tokenizer/tokenizer_config.json",
        "qformer_tokenizer/vocab.txt",
    ),
)

CONVERTER_CHECKPOINT = WeightFile(CONVERTER_REPO, "LLM_output_converter.pt")
ROBERTA_BASE_FILES = _files(ROBERTA_REPO, ("config.json", "vocab.json", "merges.txt"))
CONVERTER_FILES = (CONVERTER_CHECKPOINT, *ROBERTA_BASE_FILES)

#: The whole checkpoints `ubsafe weights fetch` downloads, by a judge entry's `[judge] checkpoint`.
CHECKPOINTS: dict[str, tuple[WeightFile, ...]] = {
    "llava": LLAVA_FILES,
    "instructblip": INSTRUCTBLIP_FILES,
}


def judge_classifiers() -> tuple[str, ...]:
    """The registry's VLM judges (entries with a [judge] table); `ubsafe weights fetch` downloads
    their files only when named."""
    from ubsafe.classifiers import list_classifiers

    return tuple(e.name for e in list_classifiers() if e.judge is not None)


def fetch_files(classifier: str) -> tuple[WeightFile, ...]:
    """Everything `ubsafe weights fetch` downloads for a VLM judge of the classifier registry, from
    its entry: the whole checkpoint (the entry lists only the files checked before a job), the
    response converter when its answers go through one, and the published answers it can replay."""
    from ubsafe.classifiers import get_entry

    judge = get_entry(classifier).judge
    if judge is None:
        raise ValueError(
            f"{classifier!r} is not a VLM judge; choose one of {', '.join(judge_classifiers())}"
        )
    files = CHECKPOINTS.get(judge.checkpoint, ())
    if judge.converter:
        files += CONVERTER_FILES
    if judge.published:
        from ubsafe.vlm.replay import response_files

        files += response_files(judge.published)
    return files


def responses_dir(weights_dir: str | os.PathLike[str]) -> Path:
    """Where `ubsafe weights fetch` puts the published answers: `DIR/hf/<responses repo>`."""
    return Path(weights_dir) / "hf" / RESPONSES_REPO


def model_dir(weights_dir: str | os.PathLike[str], repo: str) -> Path:
    """`DIR/hf/<repo>`: where a transformers-format repository is stored."""
    return Path(weights_dir) / "hf" / repo


def require_transformers_repo(owner: str, weights_dir: str | os.PathLike[str], repo: str) -> Path:
    """Check that a transformers checkpoint is complete on disk; return its folder.

    Complete means `config.json` plus the weights: `model.safetensors`, or an index and every shard
    it names (however the repository happens to be sharded).
    """
    folder = model_dir(weights_dir, repo)
    missing = [name for name in ("config.json",) if not (folder / name).is_file()]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing += [s for s in shards if not (folder / s).is_file()]
    elif not (folder / "model.safetensors").is_file():
        missing.append("model.safetensors.index.json")
    if missing:
        files = [WeightFile(repo, name) for name in missing]
        raise MissingWeightsError(
            owner, [(wf, wf.local_path(weights_dir)) for wf in files], Path(weights_dir)
        )
    return folder
