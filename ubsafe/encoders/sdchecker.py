"""The Stable Diffusion safety checker's own image tower, read from its checkpoint.

diffusers' `StableDiffusionSafetyChecker` embeds an image as
`visual_projection(vision_model(x).pooler_output)`: a transformers `CLIPVisionModel` built from the
`vision_config` of `CompVis/stable-diffusion-safety-checker`'s `config.json`, then a bias-free
1024 → 768 projection. This module builds the same two modules and fills them from the checkpoint,
whose keys are `vision_model.vision_model.*` and `visual_projection.weight` (the concept vectors in
the same file belong to the sd_filter classifier, not here).

Preprocessing is transformers' PIL image processor configured by the repo's
`preprocessor_config.json` (the classic `CLIPFeatureExtractor` the checker was published with). The
torchvision-backed `CLIPImageProcessor` that `AutoImageProcessor` picks in transformers 5 resizes
differently, so it is not used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import transformers
from PIL import Image
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

from ubsafe.encoders.encoder import InputTransform
from ubsafe.encoders.registry import EncoderEntry
from ubsafe.weights import require

_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


class SafetyCheckerTower(torch.nn.Module):
    """`visual_projection(vision_model(pixels).pooler_output)`, as the checker computes it."""

    def __init__(self, vision_config: CLIPVisionConfig, projection_dim: int) -> None:
        super().__init__()
        self.vision_model = CLIPVisionModel(vision_config)
        self.visual_projection = torch.nn.Linear(
            vision_config.hidden_size, projection_dim, bias=False
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return self.visual_projection(pooled)


def build_sd_checker(
    entry: EncoderEntry, weights_dir: str | Path
) -> tuple[SafetyCheckerTower, InputTransform, CLIPImageProcessorPil]:
    """The checker's tower with its weights, its [0, 1] transform, and its image processor."""
    require(entry.key, entry.weight_files(), weights_dir)
    config_path = entry.weight_file("config.json").local_path(weights_dir)
    vision_config, projection_dim = read_checker_config(config_path)
    tower = SafetyCheckerTower(vision_config, projection_dim)
    checkpoint = entry.checkpoint_file().local_path(weights_dir)
    load_checker_weights(tower, checkpoint)

    processor_path = entry.weight_file("preprocessor_config.json").local_path(weights_dir)
    processor = read_processor(processor_path)
    _check_declared(entry, processor, processor_path)

    return tower, ProcessorPixels(processor), processor


class ProcessorPixels:
    """The image processor's resize and crop without its normalisation: [0, 1] float32 pixels.
    A class, not a closure, so that it pickles for decode worker processes."""

    def __init__(self, processor: CLIPImageProcessorPil) -> None:
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        batch = self.processor(images=image, do_normalize=False, return_tensors="pt")
        return batch["pixel_values"][0].to(torch.float32)


def read_checker_config(path: Path) -> tuple[CLIPVisionConfig, int]:
    """The vision config and projection size from the checker's `config.json` (a CLIPConfig)."""
    config = _read_json(path)
    vision = dict(config.get("vision_config") or {})
    # Old CLIPConfig files carry both; transformers 4 let `vision_config_dict` win.
    vision.update(config.get("vision_config_dict") or {})
    if not vision:
        raise ValueError(
            f"{path}: no `vision_config` in this CLIPConfig; is it the checker's config.json?"
        )
    for key in ("architectures", "transformers_version", "torch_dtype", "_name_or_path"):
        vision.pop(key, None)
    projection_dim = int(config.get("projection_dim", 512))
    return CLIPVisionConfig(**vision), projection_dim


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors: safetensors, or a pickled state dict read with weights_only."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def load_checker_weights(tower: SafetyCheckerTower, path: Path) -> None:
    """Fill `tower` from the checkpoint's `vision_model.*` and `visual_projection.weight`."""
    raw = read_checkpoint(path)
    if "visual_projection.weight" not in raw:
        raise ValueError(
            f"{path}: no `visual_projection.weight`; this is not a StableDiffusionSafetyChecker "
            f"checkpoint (keys start {sorted(raw)[:3]})"
        )
    vision = _vision_state(raw, set(tower.vision_model.state_dict()), path)
    tower.vision_model.load_state_dict(vision, strict=True)
    tower.visual_projection.load_state_dict(
        {"weight": raw["visual_projection.weight"]}, strict=True
    )


def _vision_state(
    raw: dict[str, torch.Tensor], expected: set[str], path: Path
) -> dict[str, torch.Tensor]:
    """Strip the checker's `vision_model.` prefix, then the inner one transformers 4 had."""
    state = {
        k.removeprefix("vision_model."): v for k, v in raw.items() if k.startswith("vision_model.")
    }
    if not expected & state.keys():
        state = {k.removeprefix("vision_model."): v for k, v in state.items()}
    # Checkpoints from transformers < 4.31 store this buffer; newer models rebuild it.
    if "embeddings.position_ids" not in expected:
        state.pop("embeddings.position_ids", None)
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path}: the checkpoint's vision tower does not match the config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}); "
            "config.json and the checkpoint must come from the same repository revision"
        )
    return state


def read_processor(path: Path) -> CLIPImageProcessorPil:
    data = _read_json(path)
    return CLIPImageProcessorPil(**{k: v for k, v in data.items() if not k.endswith("_type")})


def _check_declared(entry: EncoderEntry, processor: CLIPImageProcessorPil, path: Path) -> None:
    # Typed as dicts in transformers' stubs; SizeDict objects at run time.
    size: Any = processor.size
    crop: Any = processor.crop_size
    built: dict[str, Any] = {
        "resize_mode": "shortest" if size.shortest_edge else "squash",
        "resize": size.shortest_edge or size.height,
        "crop": crop.height if processor.do_center_crop and crop.height == crop.width else None,
        "interpolation": _PIL_RESAMPLE.get(int(processor.resample), str(processor.resample)),
        "mean": tuple(float(v) for v in processor.image_mean),
        "std": tuple(float(v) for v in processor.image_std),
    }
    declared = entry.preprocess.model_dump()
    wrong = {
        name: (declared[name], value) for name, value in built.items() if declared[name] != value
    }
    if not (
        processor.do_resize
        and processor.do_rescale
        and abs(processor.rescale_factor - 1 / 255) < 1e-12
    ):
        wrong["rescale"] = ("resize, then x/255", "disabled or another factor")
    if wrong:
        details = "; ".join(
            f"{name}: entry {d!r}, processor {b!r}" for name, (d, b) in wrong.items()
        )
        raise ValueError(
            f"{entry.key}: {path} describes other preprocessing than the entry declares "
            f"({details}); fix `preprocess` in {entry.source} or fetch the file again"
        )


def sd_checker_versions() -> dict[str, str]:
    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read as JSON ({exc}); fetch it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
