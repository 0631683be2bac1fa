"""Building open_clip encoders: a named architecture, weights from a local file, its own transform.

Weights are always loaded by passing the local file as `pretrained=<path>`, which never touches the
network. That route skips open_clip's table of pretrained tags, so two things the table would have
set are set here from it explicitly: the preprocessing of the tag (mean, std, interpolation, resize
mode) and QuickGELU. The second matters: since open_clip 2.29 the plain `ViT-L-14` config with the
OpenAI weights builds nn.GELU towers, which silently gives wrong embeddings; entries that say
`quick_gelu` are built with `force_quick_gelu=True` and checked after the build.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from open_clip.transformer import QuickGELU
from torchvision import transforms

from ubsafe.encoders.deterministic import deterministic_state_dict
from ubsafe.encoders.encoder import InputTransform
from ubsafe.encoders.registry import EncoderEntry, Preprocess, open_clip_preprocess
from ubsafe.weights import WeightFile, require

_registered_configs: set[Path] = set()


def build_open_clip(
    entry: EncoderEntry, weights_dir: str | Path
) -> tuple[torch.nn.Module, InputTransform, transforms.Normalize]:
    """The vision tower of `entry`, its transform without normalisation, and that normalisation."""
    model = create_model(entry, weights_dir)
    # The very val transform create_model_and_transforms returns for this model.
    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    to_pixels, normalize = split_normalize(transform, entry.key)
    _check_declared(entry, model.visual.preprocess_cfg, normalize)
    return model.visual, to_pixels, normalize


def create_model(entry: EncoderEntry, weights_dir: str | Path, *, text: bool = False) -> Any:
    """The open_clip model of `entry` with its weights, on the CPU: the vision tower ready, and
    with `text=True` the text tower too (a deterministic entry then fills every tensor)."""
    _register_model_config(entry)
    checkpoint = _checkpoint_path(entry, weights_dir)
    preprocess = _tag_preprocess(entry)
    deterministic = entry.init == "deterministic"
    quiet = _quiet_random_init() if deterministic else contextlib.nullcontext()
    # A deterministic model is built without open_clip's random init (on the meta device, which
    # allocates nothing), then its vision tower receives the seed-free values in one pass. The
    # text tower has buffers built at construction (the causal mask), so with `text` the model
    # is built on the CPU and every tensor replaced, named as in the whole model.
    device = "meta" if deterministic and not text else "cpu"
    with quiet, torch.device(device):
        model = open_clip.create_model(
            entry.model or "",
            pretrained=str(checkpoint) if checkpoint else None,
            force_quick_gelu=entry.quick_gelu,
            force_preprocess_cfg={
                "mean": preprocess.mean,
                "std": preprocess.std,
                "interpolation": preprocess.interpolation,
                "resize_mode": preprocess.resize_mode,
            },
            device=device,
        )
    if deterministic and text:
        state = deterministic_state_dict(model.state_dict(), namespace=entry.key)
        model.load_state_dict(state, strict=True)
    elif deterministic:
        _fill_deterministic(entry, cast(torch.nn.Module, model.visual))
    _check_activation(entry, model)
    return model


def encode_texts(entry: EncoderEntry, weights_dir: str | Path, texts: list[str]) -> Any:
    """Raw text-tower embeddings (n, D) of `texts`, float32 on the CPU, one text per pass.

    The text tower of the same weights as the image encoder (CLIP score pairs them); one text
    per pass keeps every embedding independent of its neighbours.
    """
    import numpy as np

    model = create_model(entry, weights_dir, text=True).eval()
    tokenizer = open_clip.get_tokenizer(entry.model or "")
    out = np.empty((len(texts), entry.embed_dim), dtype=np.float32)
    with torch.no_grad():
        for i, text in enumerate(texts):
            out[i] = model.encode_text(tokenizer([text])).float().numpy()[0]
    return out


def _fill_deterministic(entry: EncoderEntry, visual: torch.nn.Module) -> None:
    """Give a meta-device vision tower its deterministic values (named as in the whole model)."""
    persistent = visual.state_dict()
    transient = [name for name, _ in visual.named_buffers() if name not in persistent]
    if transient:
        raise RuntimeError(
            f"{entry.key}: the {entry.model} vision tower has non-persistent buffers "
            f"({', '.join(transient)}) that a deterministic build cannot fill"
        )
    state = deterministic_state_dict(persistent, namespace=entry.key, prefix="visual.")
    visual.load_state_dict(state, strict=True, assign=True)


def split_normalize(transform: Any, key: str) -> tuple[transforms.Compose, transforms.Normalize]:
    """Split open_clip's val transform into its [0, 1] part and its final `Normalize`."""
    steps = list(getattr(transform, "transforms", []))
    if not steps or not isinstance(steps[-1], transforms.Normalize):
        raise RuntimeError(f"{key}: open_clip's transform does not end with Normalize: {transform}")
    return transforms.Compose(steps[:-1]), steps[-1]


def open_clip_versions() -> dict[str, str]:
    return {"torch": torch.__version__, "open_clip": open_clip.__version__}


def _register_model_config(entry: EncoderEntry) -> None:
    config = entry.model_config_file
    if config is None or config in _registered_configs:
        return
    if not config.is_file():
        raise FileNotFoundError(
            f"{entry.key}: open_clip model config {config} is missing ({entry.source})"
        )
    if config.stem != entry.model:
        raise ValueError(
            f"{entry.key}: open_clip names a config by its file stem; {config.name} cannot define "
            f"model {entry.model!r} (rename the file or the entry's `model`)"
        )
    open_clip.add_model_config(config)
    _registered_configs.add(config)


def _checkpoint_path(entry: EncoderEntry, weights_dir: str | Path) -> Path | None:
    if entry.init == "deterministic":
        return None
    files: list[WeightFile] = entry.weight_files()
    require(entry.key, files, weights_dir)
    return files[0].local_path(weights_dir)


def _tag_preprocess(entry: EncoderEntry) -> Preprocess:
    """Preprocessing from open_clip's table for the entry's tag, else as the entry declares."""
    if not entry.pretrained:
        return entry.preprocess
    table = open_clip.get_pretrained_cfg(entry.model or "", entry.pretrained)
    if not table:
        raise ValueError(
            f"{entry.key}: open_clip {open_clip.__version__} has no pretrained tag "
            f"{entry.pretrained!r} for {entry.model!r} ({entry.source})"
        )
    model_cfg = open_clip.get_model_config(entry.model or "") or {}
    return open_clip_preprocess(model_cfg, table)


def _check_activation(entry: EncoderEntry, model: torch.nn.Module) -> None:
    modules = list(cast(torch.nn.Module, model.visual).modules())
    uses_quick = any(isinstance(module, QuickGELU) for module in modules)
    uses_gelu = any(isinstance(module, torch.nn.GELU) for module in modules)
    if entry.quick_gelu and (uses_gelu or not uses_quick):
        raise RuntimeError(
            f"{entry.key}: the entry needs QuickGELU but open_clip {open_clip.__version__} built "
            f"{entry.model} with nn.GELU; its embeddings would be wrong"
        )


def _check_declared(
    entry: EncoderEntry, cfg: dict[str, Any], normalize: transforms.Normalize
) -> None:
    """The built transform must be the one the entry declares (it is what the cache key says)."""
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    built = {
        "resize": size,
        "crop": size,
        "resize_mode": cfg["resize_mode"],
        "interpolation": cfg["interpolation"],
        "mean": tuple(float(v) for v in normalize.mean),
        "std": tuple(float(v) for v in normalize.std),
    }
    declared = entry.preprocess.model_dump()
    wrong = {
        name: (declared[name], value) for name, value in built.items() if declared[name] != value
    }
    if wrong:
        details = "; ".join(f"{name}: entry {d!r}, model {b!r}" for name, (d, b) in wrong.items())
        raise ValueError(
            f"{entry.key}: the entry's declared preprocessing differs from the model's own "
            f"transform ({details}); fix `preprocess` in {entry.source}"
        )


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Hide open_clip's 'initialized randomly' warning: the deterministic init replaces it."""
    drop = _DropRandomInit()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


class _DropRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()
