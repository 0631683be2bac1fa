"""The VLM judges as classifiers of the registry (`llava`, `instructblip`, `gpt4v`,
`perspective-llava`): what the score and compare stages load.

A judge needs more than the image: the category it was collected for (prompts P1/P2 define that
category) and its sample id (the seed of an "unsure" tie-break). `judge_rows(rows, images)` takes
both from plan rows and returns the full `VLMDecision` — per-prompt labels and raw answers, which
the score stage keeps beside its shard. Rows whose category is outside the taxonomy (an external
evaluation set names its category after itself) are asked the general prompt only (P0).

`decide_images(images)`, the surface of every image classifier, is what the compare stage calls on
perturbed images: without categories it asks the general prompt alone — as the paper's robustness
protocol does — and seeds a tie-break by the image's pixels.

Run-wide settings (converter, decoding, GPT-4V mode and model, rate, caches, adapter) live in the
run config. `load_classifier` hands a loader the run's `fitted/` folder, so `load` reads the config
from the run directory that holds it (`<run>/run.toml`); outside a run the defaults apply.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ubsafe.classifiers.base import Decision, ImageClassifier, decision
from ubsafe.taxonomy import CATEGORIES

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from ubsafe.classifiers.registry import ClassifierEntry, JudgeSpec
    from ubsafe.config import RunConfig
    from ubsafe.vlm.converter import ResponseConverter
    from ubsafe.vlm.decision import VLMDecision
    from ubsafe.vlm.judge import GenerationSettings, VLMJudge

#: The registry's judge that is fine-tuned within a run (its adapter folder under fitted/).
PERSPECTIVE = "perspective-llava"


class ReplayCannotJudgeError(RuntimeError):
    """Replayed answers exist only for the original images of the published dataset."""


class VLMClassifier(ImageClassifier):
    """A judge behind the image-classifier surface, plus `judge_rows` for the score stage."""

    #: Whether `judge_rows` needs the decoded images (a replay does not).
    reads_images: bool = True
    #: Side of the square the compare stage letterboxes images to before perturbing them.
    input_size: int = 336

    def __init__(self, entry: ClassifierEntry | None, name: str) -> None:
        self.entry = entry
        self.name = entry.name if entry else name
        self.categories = entry.categories if entry else CATEGORIES

    @abstractmethod
    def judge_rows(self, rows: pd.DataFrame, images: Sequence[Image.Image] | None) -> VLMDecision:
        """Decisions on plan `rows` (sample_id, category, source), in row order; `images[i]` is
        row i's image (None when `reads_images` is False)."""


class JudgeClassifier(VLMClassifier):
    """A judge that looks at the images (LLaVA, InstructBLIP, PerspectiveVision, a queried API)."""

    def __init__(self, judge: VLMJudge, entry: ClassifierEntry | None = None) -> None:
        super().__init__(entry, judge.name)
        self.judge = judge
        self.input_size = _input_size(judge)

    def judge_rows(self, rows: pd.DataFrame, images: Sequence[Image.Image] | None) -> VLMDecision:
        if images is None or len(images) != len(rows):
            raise ValueError(f"{self.name}: pass one image per row ({len(rows)} rows)")
        sample_ids = [str(s) for s in rows["sample_id"]]
        categories = [str(c) for c in rows["category"]]
        known = [c in CATEGORIES for c in categories]
        if all(known):
            return self.judge.decide_images(images, categories, sample_ids)
        if not any(known):
            return self.judge.decide_general(images, sample_ids)
        outside = sorted({c for c, k in zip(categories, known, strict=True) if not k})
        raise ValueError(
            f"{self.name}: rows mix taxonomy categories with {outside}; a judge asks either the "
            "category's prompts or the general one per batch — score such datasets in separate runs"
        )

    def decide_images(
        self,
        images: Sequence[Image.Image],
        categories: Sequence[str] | None = None,
        sample_ids: Sequence[str] | None = None,
    ) -> Decision:
        """With categories, the paper's prompts; without, the general prompt only. Tie-breaks are
        seeded by `sample_ids`, else by the pixels; identical images then get one decision,
        whatever their positions.
        """
        ids = list(sample_ids) if sample_ids is not None else _pixel_ids(images)
        if categories is not None:
            found = self.judge.decide_images(images, list(categories), ids)
            return decision(found.pred, found.score)
        first = {sid: i for i, sid in reversed(list(enumerate(ids)))}
        unique = sorted(first, key=first.__getitem__)
        found = self.judge.decide_general([images[first[s]] for s in unique], unique)
        at = {sid: i for i, sid in enumerate(unique)}
        rows = [at[sid] for sid in ids]
        return decision(found.pred[rows], found.score[rows])


class ReplayClassifier(VLMClassifier):
    """GPT-4V's published answers, joined by sample id (`ubsafe.vlm.replay`)."""

    reads_images = False

    def __init__(
        self,
        responses_root: Path,
        converter: ResponseConverter,
        *,
        seed: int,
        entry: ClassifierEntry | None = None,
        model: str = "gpt4v",
    ) -> None:
        super().__init__(entry, model)
        self.responses_root = Path(responses_root)
        self.converter = converter
        self.seed = seed
        self.model = model

    def judge_rows(
        self, rows: pd.DataFrame, images: Sequence[Image.Image] | None = None
    ) -> VLMDecision:
        from ubsafe.vlm.replay import replay

        table = published_table(str(self.responses_root), self.model)
        return replay(
            table,
            [str(s) for s in rows["sample_id"]],
            self.converter,
            seed=self.seed,
            categories=[str(c) for c in rows["category"]],
            sources=[str(s) for s in rows["source"]],
        )

    def decide_images(
        self,
        images: Sequence[Image.Image],
        categories: Sequence[str] | None = None,
        sample_ids: Sequence[str] | None = None,
    ) -> Decision:
        raise ReplayCannotJudgeError(
            f"{self.name} replays published answers about the dataset's original images and "
            "cannot judge new or perturbed ones; set gpt4v.mode = 'query' to ask an endpoint"
        )


@functools.lru_cache(maxsize=4)
def published_table(root: str, model: str) -> pd.DataFrame:
    """The published answers of `model` under `root`, read once per process."""
    from ubsafe.vlm.replay import read_published_responses

    if not Path(root).is_dir():
        raise FileNotFoundError(
            f"the published VLM answers are not in {root}. fix: `ubsafe weights fetch --to DIR "
            "--classifiers gpt4v` (they land in DIR/hf/yiting/unsafebench_vlm_responses), or "
            "`ubsafe data fetch vlm-responses --to DIR` and vlm.responses_dir = DIR"
        )
    return read_published_responses(root, model)


def _pixel_ids(images: Sequence[Image.Image]) -> list[str]:
    from ubsafe.vlm.openai_client import image_digest

    return [f"pixels-{image_digest(image)[:32]}" for image in images]


def _input_size(judge: VLMJudge) -> int:
    """The side of the judge's own square input (its processor's crop or resize), else 512."""
    processor = getattr(judge, "processor", None)
    image_processor = getattr(processor, "image_processor", None)
    for attribute in ("crop_size", "size"):
        size = getattr(image_processor, attribute, None)
        for key in ("height", "shortest_edge"):
            # A dict in older transformers, a SizeDict (attributes) in newer ones.
            value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
            if value:
                return int(value)
    return 512


# --- settings from the run config ---


def generation_settings(judge: JudgeSpec, config: RunConfig) -> GenerationSettings:
    """The decoding a judge uses under the run's `vlm.decoding` and `vlm.max_new_tokens` (its
    entry's `paper_decoding` under `vlm.decoding = "paper"`)."""
    from ubsafe.vlm.judge import INSTRUCTBLIP_PAPER_SETTINGS, GenerationSettings

    paper = {"greedy": GenerationSettings(), "lavis-beams": INSTRUCTBLIP_PAPER_SETTINGS}
    chosen = paper[judge.paper_decoding] if config.vlm.decoding == "paper" else GenerationSettings()
    return dataclasses.replace(chosen, max_new_tokens=config.vlm.max_new_tokens)


def responses_root(config: RunConfig) -> Path:
    """The local copy of the published answers (`vlm.responses_dir`, or the weights directory's)."""
    from ubsafe.vlm.registry import responses_dir

    if config.vlm.responses_dir:
        return Path(config.vlm.responses_dir)
    return responses_dir(config.weights_dir)


def response_cache(config: RunConfig, run_root: Path | None) -> Path | None:
    """Where a queried endpoint's answers are cached: `vlm.response_cache`, else
    `<run>/vlm-cache`."""
    if config.vlm.response_cache:
        return Path(config.vlm.response_cache)
    return run_root / "vlm-cache" if run_root is not None else None


def adapter_dir(config: RunConfig, run_root: Path | None, name: str = PERSPECTIVE) -> Path:
    """The LoRA adapter of the judge `name`: `perspective.adapter`, else the run's
    `fitted/<name>` (where the finetune stage writes it)."""
    from ubsafe.classifiers.probe import FittedWeightsMissingError

    if config.perspective.adapter:
        return _checked_adapter(Path(config.perspective.adapter))
    if run_root is None:
        raise FittedWeightsMissingError(
            f"{name} is fine-tuned within a run: load it from a run directory, or set "
            "perspective.adapter"
        )
    folder = run_root / "fitted" / name
    if not (folder / "adapter_config.json").is_file():
        raise FittedWeightsMissingError(
            f"{name}: {folder} holds no adapter yet. fix: run the finetune stage "
            "(`ubsafe run effectiveness` / `ubsafe submit effectiveness` run it before scoring), "
            "or set perspective.adapter to an adapter made elsewhere"
        )
    return folder


def run_context(
    fitted_dir: str | os.PathLike[str] | None, weights_dir: str | os.PathLike[str]
) -> tuple[RunConfig, Path | None]:
    """The run config and directory that `fitted_dir` belongs to; defaults outside a run."""
    from ubsafe.config import RunConfig, load_run_config
    from ubsafe.rundir import RUN_TOML

    if fitted_dir is not None:
        root = Path(fitted_dir).parent
        if (root / RUN_TOML).is_file():
            config = load_run_config(root / RUN_TOML)
            return config.model_copy(update={"weights_dir": str(weights_dir)}), root
    return RunConfig(weights_dir=str(weights_dir)), None


# --- the registry's loader ---


def build(
    name: str,
    config: RunConfig,
    *,
    device: str = "auto",
    run_root: Path | None = None,
    entry: ClassifierEntry | None = None,
) -> VLMClassifier:
    """The judge `name` as its registry entry and the run config describe it (weights from
    `config.weights_dir`)."""
    from ubsafe.classifiers import get_entry
    from ubsafe.vlm.load import load_judge

    entry = entry or get_entry(name)
    judge = entry.judge
    if judge is None:
        raise ValueError(f"{name} is not a VLM judge (its registry entry has no [judge] table)")
    weights_dir = Path(config.weights_dir)
    mode = judge.mode(config)
    if mode == "replay":
        from ubsafe.vlm.converter import load_converter
        from ubsafe.vlm.llava import resolve_device

        converter = load_converter(weights_dir, config.vlm.converter, device=resolve_device(device))
        return ReplayClassifier(
            responses_root(config), converter, seed=config.seed, entry=entry, model=judge.published
        )
    chat = None
    if mode == "query":
        from ubsafe.vlm.openai_client import ChatSettings

        chat = ChatSettings(
            model=config.gpt4v.model,
            max_tokens=config.vlm.max_new_tokens,
            requests_per_minute=config.vlm.requests_per_minute,
        )
    loaded = load_judge(
        judge.loader,
        weights_dir,
        converter=config.vlm.converter,
        device=device,
        seed=config.seed,
        batch_size=config.vlm.batch_size,
        settings=generation_settings(judge, config),
        cache_dir=response_cache(config, run_root) if mode == "query" else None,
        adapter_dir=adapter_dir(config, run_root, name) if judge.adapter else None,
        chat=chat,
    )
    return JudgeClassifier(loaded, entry)


def load(
    entry: ClassifierEntry,
    weights_dir: Path,
    *,
    device: str = "cpu",
    fitted_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> VLMClassifier:
    """The registry loader: the judge `entry.name`, configured by the run that owns `fitted_dir`."""
    config, run_root = run_context(fitted_dir, weights_dir)
    return build(entry.name, config, device=device, run_root=run_root, entry=entry)


def as_vlm(classifier: object) -> VLMClassifier | None:
    """`classifier` when it is a VLM judge (the score stage keeps its answers), else None."""
    return classifier if isinstance(classifier, VLMClassifier) else None


def check_config(config: RunConfig) -> None:
    """Stop before any job when a judge's inputs other than weights are missing: the published
    answers of a judge that replays them, an adapter named by `perspective.adapter`. (Weight files
    are checked with the registry entries'.)"""
    from ubsafe.classifiers import get_entry
    from ubsafe.config import ConfigError
    from ubsafe.vlm.replay import PUBLISHED_MODELS

    for name in config.classifiers:
        judge = get_entry(name).judge
        if judge is None:
            continue
        if judge.mode(config) == "replay":
            folder = responses_root(config) / PUBLISHED_MODELS[judge.published]
            if not any(folder.glob("prompt_*/*.json")):
                raise ConfigError(
                    f"{name} replays the published answers, but {folder} holds none. fix: "
                    f"`ubsafe weights fetch --to DIR --classifiers {name}` (they land in "
                    "DIR/hf/yiting/unsafebench_vlm_responses), or `ubsafe data fetch "
                    "vlm-responses --to DIR` and vlm.responses_dir = DIR"
                )
        if judge.adapter and config.perspective.adapter:
            _checked_adapter(Path(config.perspective.adapter))
    _warn_about_the_endpoint(config)


def _warn_about_the_endpoint(config: RunConfig) -> None:
    """Say before any job when queries would send the key in clear text to another machine."""
    import logging
    import os

    from ubsafe.classifiers import get_entry
    from ubsafe.vlm.openai_client import DEFAULT_BASE_URL, insecure_endpoint

    judges = [get_entry(name).judge for name in config.classifiers]
    if not any(judge is not None and judge.mode(config) == "query" for judge in judges):
        return
    warning = insecure_endpoint(os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
    if warning:
        logging.getLogger(__name__).warning(warning)


def _checked_adapter(folder: Path) -> Path:
    from ubsafe.classifiers.probe import FittedWeightsMissingError

    if not (folder / "adapter_config.json").is_file():
        raise FittedWeightsMissingError(
            f"perspective.adapter = {str(folder)!r} holds no adapter_config.json. fix: point it "
            "to another run's fitted/perspective-llava, or to an adapter converted with "
            "ubsafe.perspective.lora.convert_llava_adapter"
        )
    return folder
