"""Generate stage throughput vs the diffusers pipeline called directly (same prompts, batch,
precision, steps), and Safe Latent Diffusion's cost relative to plain Stable Diffusion.

The stage plans the images, draws each starting latent, runs the pipeline, checks the prompt's
token count, encodes PNGs and writes the shard atomically; the baseline calls the pipeline on the
same prompts with a seeded generator and keeps the PIL images. Both use the same loaded pipeline
(loading is outside the clock). Rounds alternate between the two; medians are reported. Goal: the
stage ≥ 90 % of the pipeline alone.

`--model tiny` (default) uses the tiny generators (CPU, seconds). `--model sd14-random` builds
Stable Diffusion 1.4's architecture at full size with random weights (no download; about 1 B
parameters) into a temporary weights directory in the diffusers layout and loads it through
ubsafe's loader: for a GPU (512 px, fp16, batch 8 by default there).

    python bench/bench_generate.py [--model tiny] [--n 24] [--steps 10] [--rounds 3]
    python bench/bench_generate.py --model sd14-random --device cuda --n 32 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "a photo of a cat on a sofa",
    "a harbour at dawn, oil painting",
    "two people arguing in a kitchen",
    "a mountain road in the rain",
    "portrait of an old sailor, dramatic light",
    "a bowl of fruit on a wooden table",
]


def write_prompts(folder: Path, n: int) -> Path:
    path = folder / "prompts.jsonl"
    rows = [
        {"prompt_id": f"p{i:04d}", "prompt": PROMPTS[i % len(PROMPTS)], "seed": 1000 + i}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_sd14_random(weights: Path) -> None:
    """SD-1.4's architecture, random weights, saved as `DIR/hf/bench/sd14-random` and registered
    under the names `bench-sd14` and `bench-sld14-max` (this process only)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ubsafe.generate import registry
    from ubsafe.generate.tiny import write_tokenizer_files

    folder = weights / "hf" / "bench" / "sd14-random"
    if not (folder / "model_index.json").is_file():
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            write_tokenizer_files(Path(tmp))
            tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
        parts: Any = {
            "unet": UNet2DConditionModel(sample_size=64, cross_attention_dim=768),
            "vae": AutoencoderKL(
                block_out_channels=[128, 256, 512, 512],
                down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4,
                layers_per_block=2,
                latent_channels=4,
                sample_size=512,
            ),
            "text_encoder": CLIPTextModel(
                CLIPTextConfig(
                    hidden_size=768,
                    intermediate_size=3072,
                    num_attention_heads=12,
                    num_hidden_layers=12,
                    projection_dim=768,
                )
            ),
            "tokenizer": tokenizer,
            "scheduler": PNDMScheduler(
                beta_start=0.00085,
                beta_end=0.012,
                beta_schedule="scaled_linear",
                skip_prk_steps=True,
                steps_offset=1,
            ),
        }
        pipe: Any = StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        pipe.save_pretrained(folder, safe_serialization=True)
        # the hub layout's tokenizer files, as the registry lists them
        write_tokenizer_files(folder / "tokenizer")
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if not (folder / "tokenizer" / name).is_file():
                (folder / "tokenizer" / name).write_text("{}", encoding="utf-8")
    entries = registry._entries()
    base = {"description": "SD-1.4 architecture, random weights", "base": "bench/sd14-random"}
    entries["bench-sd14"] = registry.GeneratorEntry(name="bench-sd14", pipeline="sd", **base)
    entries["bench-sld14-max"] = registry.GeneratorEntry(
        name="bench-sld14-max", pipeline="sld", sld_preset="max", **base
    )


def stage_rate(
    root: Path, prompts: Path, weights: Path, generator: str, args: Any, tag: str
) -> float:
    """Images/s of the generate stage over every shard of a fresh run (models already loaded)."""
    from ubsafe.config import build_config
    from ubsafe.generate.plan import plan_mitigation
    from ubsafe.stages import generate

    config = build_config(
        dataset=prompts,
        flags={
            "target": "mitigation",
            "out": str(root / f"run-{generator}-{tag}"),
            "generators": generator,
            "images_per_prompt": 1,
            "steps": args.steps,
            "generation_batch": args.batch,
            "generation_precision": args.precision,
            "weights_dir": str(weights),
            "device": args.device,
            "shard_size": args.n,
        },
    )
    run = plan_mitigation(config)
    generate.run_generator(run, generator)  # loaded (and cached) before the clock
    start = time.perf_counter()
    for shard in range(run.n_shards):
        generate.run_shard(run, shard)
    _sync(args.device)
    return len(run.plan) / (time.perf_counter() - start)


def pipeline_rate(generator: Any, args: Any, width: int, height: int) -> float:
    """Images/s of the diffusers pipeline called directly on the same prompts and batch."""
    import torch

    from ubsafe.generate.presets import SLD_PRESETS

    extra = (
        dict(SLD_PRESETS[generator.entry.sld_preset]) if generator.entry.pipeline == "sld" else {}
    )
    batch = 1 if args.device == "cpu" else args.batch
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.n)]
    start = time.perf_counter()
    for i in range(0, args.n, batch):
        chunk = prompts[i : i + batch]
        seeds = [torch.Generator("cpu").manual_seed(1000 + i + k) for k in range(len(chunk))]
        with torch.inference_mode():
            generator.pipe(
                chunk,
                generator=seeds,
                num_inference_steps=args.steps,
                guidance_scale=7.5,
                width=width,
                height=height,
                **extra,
            )
    _sync(args.device)
    return args.n / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "sd14-random"], default="tiny")
    parser.add_argument("--n", type=int, default=24, help="images per measurement")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8, help="images per call on a GPU")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    args = parser.parse_args()

    import torch

    from ubsafe.generate.pipeline import resolve_precision
    from ubsafe.stages import generate

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = root / "weights"
        if args.model == "tiny":
            names, size = ("tiny-sd", "tiny-sld-max"), 64
        else:
            build_sd14_random(weights)
            names, size = ("bench-sd14", "bench-sld14-max"), 512
        prompts = write_prompts(root, args.n)
        precision = resolve_precision(args.precision, args.device)
        batch = 1 if args.device == "cpu" else args.batch
        print(
            f"== generate stage vs diffusers pipeline: {args.model}, {args.n} images of "
            f"{size}×{size}, {args.steps} steps, batch {batch}, {precision} on {args.device}, "
            f"torch {torch.__version__} with {torch.get_num_threads()} thread(s)"
        )
        results: dict[str, tuple[float, float]] = {}
        for name in names:
            stage_rates, pipe_rates = [], []
            loaded = generate._generator(name, str(weights), args.device, args.precision)
            warm = argparse.Namespace(**{**vars(args), "n": min(args.n, batch)})
            pipeline_rate(loaded, warm, size, size)  # untimed: first-call costs hit neither side
            for r in range(args.rounds):  # alternate, so drift in machine load hits both
                pipe_rates.append(pipeline_rate(loaded, args, size, size))
                stage_rates.append(stage_rate(root, prompts, weights, name, args, f"r{r}"))
            stage, pipe = statistics.median(stage_rates), statistics.median(pipe_rates)
            results[name] = (stage, pipe)
            print(
                f"{name:<16} pipeline alone {pipe:8.3f} images/s   stage {stage:8.3f} images/s"
                f"   stage/pipeline {stage / pipe:6.1%}   (median of {args.rounds})"
            )
        (sd_stage, sd_pipe), (sld_stage, sld_pipe) = results[names[0]], results[names[1]]
        print(
            f"SLD-Max cost relative to SD: {sd_pipe / sld_pipe:.2f}× the time per image through "
            f"the pipeline, {sd_stage / sld_stage:.2f}× through the stage"
        )


if __name__ == "__main__":
    main()
