"""Embed stage throughput vs the encoder alone on ready tensors (same model, same batch).

The stage decodes (threads), resizes, crops, encodes and writes the HDF5 shard; the baseline only
encodes tensors that were decoded beforehand. The ratio says how busy the stage keeps its encoder
(goal ≥ 90 %). The model is a ViT-B/32 (open_clip architecture) with ubsafe's deterministic weights,
so the benchmark needs no download; `--model` picks another open_clip architecture.

    python bench/bench_embed.py [--n 256] [--batch 32] [--model ViT-B-32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("UBSAFE_PROGRESS", "0")
    from ubsafe.config import build_config
    from ubsafe.data.demo import write_demo
    from ubsafe.stages import common, embed
    from ubsafe.stages.plan import plan_run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key = register_entry(root, args.model, args.embed_dim, args.size)
        data = write_demo(root / "data", n=args.n, seed=0)
        config = build_config(
            dataset=data,
            flags={
                "out": str(root / "run"),
                "encoder": key,
                "classifiers": ("nudenet",),
                "shard_size": args.n,
                "batch_size": args.batch,
                "decode_workers": args.decode_workers,
                "weights_dir": str(root / "weights"),
                "micro_batch": args.batch,
            },
        )
        run = plan_run(config)
        encoder = common.run_encoder(run, key)
        rows = run.shard_plan(0)
        decoded = common.decode_shard(run, rows, encoder.to_input)
        ready = torch.stack(decoded.items)
        for i in range(0, len(ready), args.batch):  # warm up: one full pass
            encoder.encode(ready[i : i + args.batch])

        baselines, stages = [], []
        shard_file = None
        for _ in range(args.rounds):  # alternate the two, so drift in machine load hits both
            start = time.perf_counter()
            for i in range(0, len(ready), args.batch):
                encoder.encode(ready[i : i + args.batch])
            baselines.append(len(ready) / (time.perf_counter() - start))
            if shard_file is not None:
                shard_file.unlink()
            start = time.perf_counter()
            embed.run_shard(run, 0)
            stages.append(len(rows) / (time.perf_counter() - start))
            shard_file = next((root / "run" / "embeddings").rglob("shard-00000.h5"))
        baseline, stage = statistics.median(baselines), statistics.median(stages)

    print(
        f"model {args.model} {args.size}px, batch {args.batch}, micro-batch {encoder.micro_batch}, "
        f"{args.threads} torch thread(s), {args.decode_workers} decode thread(s), {args.n} images"
    )
    print(f"encoder alone on ready tensors: {baseline:8.1f} images/s (median of {args.rounds})")
    print(
        f"embed stage from image bytes:   {stage:8.1f} images/s "
        "(decode, resize, crop, encode, write)"
    )
    print(f"ratio stage / encoder: {stage / baseline:.1%}  (goal >= 90%)")


if __name__ == "__main__":
    main()
