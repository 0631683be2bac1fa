"""Embed stage throughput against the encoder alone and the bare open_clip tower, same run.

Three figures, on the same model, batch and device:

- the embed stage from JPEG files on disk (`--files` files of `--image-size` × 5/4 pixels, quality
  90, photo-like content): read, decode, resize, crop, encode, write the HDF5 shard; on a pinned
  CUDA device it takes the GPU decode path (nvJPEG), elsewhere the CPU path (PIL, threads);
- ubsafe's encoder alone on ready tensors already on the device;
- open_clip's vision tower itself with bfloat16 weights on bfloat16 inputs (what the hardware
  gives without ubsafe), and in float32.

Ratios: stage / tower-bf16 (goal >= 85 % on a GPU) and encoder / tower-bf16 (goal >= 95 %). The
model has ubsafe's deterministic weights, so nothing is downloaded. The benchmark also builds the
deterministic ViT-L/14 and asserts that it takes at most `--build-limit` seconds on the CPU.

    python bench/bench_embed.py [--model ViT-B-32] [--image-size 256] [--files 256] [--batch 32]
    python bench/bench_embed.py --model ViT-L-14 --image-size 512 --files 6144 --batch 256  # GPU
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

#: open_clip architectures' output widths (for the registry entry the benchmark writes).
EMBED_DIMS = {"ViT-B-32": 512, "ViT-B-16": 512, "ViT-L-14": 768, "ViT-H-14": 1024}


def register_entry(folder: Path, model: str, embed_dim: int, size: int) -> str:
    key = f"bench-{model.lower()}"
    entry = {
        "description": f"open_clip {model} with deterministic weights (benchmark only)",
        "family": "open_clip",
        "model": model,
        "quick_gelu": True,
        "init": "deterministic",
        "embed_dim": embed_dim,
        "preprocess": {
            "pipeline": "open_clip",
            "resize_mode": "shortest",
            "resize": size,
            "crop": size,
            "interpolation": "bicubic",
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }
    path = folder / f"{key}.json"
    path.write_text(json.dumps(entry), encoding="utf-8")
    from ubsafe.encoders import add_registry_path

    add_registry_path(path)
    return key


def photo_jpeg(args: tuple[int, int, Path]) -> str:
    """One photo-like JPEG (smooth shapes, texture, noise; ~160 KB at 512 × 640), unique bytes."""
    import numpy as np
    from PIL import Image

    index, side, folder = args
    rng = np.random.default_rng(index)
    height, width = side * 5 // 4, side
    coarse = rng.uniform(0, 255, size=(6, 5, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    yy, xx = np.mgrid[0:height, 0:width]
    texture = 40 * np.sin(xx / rng.uniform(3, 12)) * np.cos(yy / rng.uniform(3, 12))
    noise = rng.normal(0, 18, size=(height, width, 3))
    pixels = np.clip(base + texture[..., None] + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    name = f"img{index:05d}.jpg"
    (folder / name).write_bytes(buffer.getvalue())
    return name


def write_files(folder: Path, count: int, side: int) -> Path:
    """`count` JPEG files and a manifest CSV over them."""
    from ubsafe.taxonomy import CATEGORIES

    folder.mkdir(parents=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        names = list(pool.map(photo_jpeg, [(i, side, folder) for i in range(count)], chunksize=16))
    lines = ["path,label,category,source,split"]
    lines += [
        f"{name},{i // 2 % 2},{CATEGORIES[i % len(CATEGORIES)]},Laion5B,{('train', 'test')[i % 2]}"
        for i, name in enumerate(names)
    ]
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def rate(func, count: int, rounds: int) -> float:  # type: ignore[no-untyped-def]
    """Median images/s of `func()` (which handles `count` images) over `rounds` runs."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def build_seconds(model: str, folder: Path, repeat: int = 3) -> float:
    """Best of `repeat` builds of the deterministic `model` on the CPU (tower and weights)."""
    from ubsafe.encoders.openclip import build_open_clip
    from ubsafe.encoders.registry import get_entry

    entry = get_entry(register_entry(folder, model, EMBED_DIMS.get(model, 768), 224))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        build_open_clip(entry, folder)
        best = min(best, time.perf_counter() - start)
    return best


def v1_build_seconds(model: str) -> float:
    """The build before bulk generation, as the baseline: open_clip's random init on the CPU,
    then every value of the tower from SHAKE-256 (deterministic init v1)."""
    import hashlib
    import math

    import numpy as np
    import open_clip

    from ubsafe.encoders.deterministic import parameter_scale

    start = time.perf_counter()
    visual = open_clip.create_model(model, device="cpu").visual
    for name, tensor in visual.state_dict().items():
        scale = parameter_scale(name, tuple(tensor.shape))
        if scale is None or not tensor.is_floating_point():
            continue
        count = math.prod(tensor.shape)
        raw = hashlib.shake_256(f"v1:{name}".encode()).digest(4 * count)
        words = np.frombuffer(raw, dtype="<u4").astype(np.float64)
        uniform = (words + 0.5) / 2.0**31 - 1.0
        tensor.copy_(torch_from(uniform * scale * math.sqrt(3.0), tensor.shape))
    return time.perf_counter() - start


def torch_from(values, shape):  # type: ignore[no-untyped-def]
    import torch

    return torch.from_numpy(values.astype("float32")).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--embed-dim", type=int, default=None)
    parser.add_argument("--size", type=int, default=224, help="the encoder's input size")
    parser.add_argument("--image-size", type=int, default=256, help="width of the JPEG files")
    parser.add_argument("--files", type=int, default=256, help="JPEG files on disk")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--decode-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument(
        "--decode-pool",
        choices=("threads", "processes"),
        default="threads",
        help="the stage's CPU decode pool (both are also timed alone)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--build-model", default="ViT-L-14")
    parser.add_argument("--build-limit", type=float, default=2.0, help="seconds; 0 skips")
    args = parser.parse_args()
    embed_dim = args.embed_dim or EMBED_DIMS.get(args.model, 512)

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("UBSAFE_PROGRESS", "0")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    from ubsafe.config import build_config
    from ubsafe.encoders.openclip import build_open_clip
    from ubsafe.stages import common, embed
    from ubsafe.stages.plan import plan_run

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build = build_seconds(args.build_model, root) if args.build_limit > 0 else None
        build_v1 = v1_build_seconds(args.build_model) if args.build_limit > 0 else None
        key = register_entry(root, args.model, embed_dim, args.size)
        start = time.perf_counter()
        manifest = write_files(root / "files", args.files, args.image_size)
        made = time.perf_counter() - start
        megabytes = sum(p.stat().st_size for p in (root / "files").glob("*.jpg")) / 1e6
        config = build_config(
            dataset=manifest,
            flags={
                "out": str(root / "run"),
                "encoder": key,
                "classifiers": ("probe-all",),
                "shard_size": args.files,
                "batch_size": args.batch,
                "decode_workers": args.decode_workers,
                "decode_pool": args.decode_pool,
                "weights_dir": str(root / "weights"),
                "micro_batch": args.batch,
                "device": device,
            },
        )
        run = plan_run(config)
        encoder = common.run_encoder(run, key)
        rows = run.shard_plan(0)
        decoded = common.decode_inputs(run, rows, encoder)
        ready = torch.stack(decoded.items).to(encoder.device)
        count = len(ready)
        batches = [ready[i : i + args.batch] for i in range(0, count, args.batch)]

        tower, _, normalize = build_open_clip(encoder.entry, root / "weights")
        mean = torch.tensor(normalize.mean, device=encoder.device).view(3, 1, 1)
        std = torch.tensor(normalize.std, device=encoder.device).view(3, 1, 1)
        towers = {}
        for dtype in (torch.bfloat16, torch.float32):
            module = tower.to(encoder.device, dtype=dtype).eval()
            inputs = [((b - mean) / std).to(dtype) for b in batches]

            def run_tower(module=module, inputs=inputs) -> None:  # type: ignore[no-untyped-def]
                with torch.inference_mode():
                    for x in inputs:
                        module(x)
                sync()

            run_tower()  # warm-up
            towers[dtype] = rate(run_tower, count, args.rounds)
            del module, inputs

        def run_encoder() -> None:
            for b in batches:
                encoder.encode(b)

        run_encoder()  # warm-up
        shard_file = None
        encoder_rates, stage_rates = [], []
        for _ in range(args.rounds):  # alternate, so drift in machine load hits both
            encoder_rates.append(rate(run_encoder, count, 1))
            if shard_file is not None:
                shard_file.unlink()
            stage_rates.append(rate(lambda: embed.run_shard(run, 0), len(rows), 1))
            shard_file = next((root / "run" / "embeddings").rglob("shard-00000.h5"))
        encoder_rate = statistics.median(encoder_rates)
        stage_rate = statistics.median(stage_rates)
        path = common.decode_path(run)
        pools: dict[str, list[float]] = {"threads": [], "processes": []}
        startup = 0.0
        if path == "cpu":

            def decode(pool: str) -> None:
                convert = encoder.input_converter
                for _ in common.iter_decoded(run, rows, convert, grey=True, pool=pool):
                    pass

            start = time.perf_counter()
            decode("processes")  # starts the worker processes, kept for later shards
            startup = time.perf_counter() - start
            decode("threads")
            for _ in range(args.rounds):  # decoding alone, alternating
                for pool, rates in pools.items():
                    rates.append(rate(lambda pool=pool: decode(pool), len(rows), 1))

    bf16 = towers[torch.bfloat16]
    print(
        f"model {args.model} {args.size}px on {device} ({encoder.precision} -> "
        f"{str(encoder.compute_dtype).removeprefix('torch.')}), batch {args.batch}, "
        f"micro-batch {encoder.micro_batch}, {args.threads} torch thread(s), "
        f"{args.decode_workers} decode worker(s), decode path {path}"
    )
    print(
        f"files: {args.files} JPEG {args.image_size}x{args.image_size * 5 // 4} q90, "
        f"{megabytes / args.files * 1000:.0f} KB each (written in {made:.1f} s)"
    )
    print(f"open_clip tower, bf16 weights:   {bf16:9.1f} images/s")
    print(f"open_clip tower, float32:        {towers[torch.float32]:9.1f} images/s")
    print(f"ubsafe encoder on ready tensors: {encoder_rate:9.1f} images/s")
    print(f"embed stage from JPEG files:     {stage_rate:9.1f} images/s ({args.decode_pool})")
    if pools["threads"]:
        threads, processes = (statistics.median(pools[p]) for p in ("threads", "processes"))
        print(
            f"CPU decode alone: threads {threads:.1f} images/s, processes {processes:.1f} "
            f"images/s, processes / threads {processes / threads:.2f}x (the first shard of a "
            f"process also starts the workers: {startup:.1f} s with its {len(rows)} images)"
        )
    print(
        f"ratio encoder / tower-bf16: {encoder_rate / bf16:.1%}  (goal >= 95% on a GPU); "
        f"stage / tower-bf16: {stage_rate / bf16:.1%}  (goal >= 85% on a GPU); "
        f"stage / encoder: {stage_rate / encoder_rate:.1%}"
    )
    if build is not None:
        verdict = "ok" if build <= args.build_limit else "TOO SLOW"
        print(
            f"deterministic {args.build_model} build on CPU: {build:.2f} s (best of 3, "
            f"limit {args.build_limit:.1f} s) {verdict}; the v1 build (random init, then "
            f"SHAKE-256 values) {build_v1 or 0:.2f} s, {(build_v1 or 0) / build:.1f}x slower"
        )
        if build > args.build_limit:
            sys.exit(1)


if __name__ == "__main__":
    main()
