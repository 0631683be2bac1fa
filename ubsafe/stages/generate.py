"""Stage `generate`: make a shard's images with the run's text-to-image generators.

Per shard, the planned images (generator, prompt, image index) in plan order: each image's
starting latent comes from `ubsafe.generate.seeding` (by prompt seed and image index, or the I2P
runner's stream), so an image does not depend on the shard or batch that makes it. On a GPU the
images of one generator and one setting (size, guidance, steps) go through the pipeline
`generation_batch` at a time; on the CPU one at a time, because the CPU's arithmetic depends on
the batch shape. Output: `shards/generate/shard-NNNNN.parquet` in UnsafeBench's layout — `image`
(struct of PNG `bytes` and `path`), `text` (the prompt) — plus sample_id, prompt_id, categories,
generator, image_index, seed, guidance, steps, width, height, negative_prompt and `truncated`
(the prompt exceeded the text encoder's 77 tokens and was cut as the pipeline cuts it). Written
atomically; done when it exists with this run's config hash.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ubsafe import shardfile
from ubsafe.stages import Needs

if TYPE_CHECKING:
    import torch

    from ubsafe.generate.pipeline import Generator
    from ubsafe.rundir import Run

NAME = "generate"
SHARDED = True
NEEDS = Needs(
    inputs=("plan.parquet", "prompts.parquet", "generator weights"),
    outputs=("shards/generate/shard-NNNNN.parquet",),
    gpu=True,
)
log = logging.getLogger(__name__)

#: Test hook: `<shard>:<path>` makes that shard, after its first batch, create `path` and wait
#: while it exists (a test kills the process there, at a known point, then relaunches).
HOLD_ENV = "UBSAFE_GENERATE_HOLD"


def applies(run: Run) -> bool:
    return True


def is_done(run: Run, shard: int) -> bool:
    return shardfile.is_done(run, NAME, shard)


@functools.lru_cache(maxsize=2)
def _generator(name: str, weights_dir: str, device: str, precision: str) -> Generator:
    from ubsafe.generate.pipeline import load_generator

    return load_generator(name, weights_dir, device=device, precision=precision)


def run_generator(run: Run, name: str) -> Generator:
    from ubsafe.stages.common import device_of

    c = run.config
    return _generator(name, c.weights_dir, device_of(run), c.generation_precision)


@dataclass
class Item:
    """One planned image with everything its pipeline call needs."""

    sample_id: str
    generator: str
    prompt_id: str
    image_index: int
    seed: int
    prompt: str
    negative_prompt: str | None
    guidance: float
    steps: int
    width: int
    height: int

    @property
    def setting(self) -> tuple[Any, ...]:
        return (self.generator, self.guidance, self.steps, self.width, self.height)


def items_of(run: Run, rows: pd.DataFrame) -> list[Item]:
    from ubsafe.generate import get_generator
    from ubsafe.generate.pipeline import guidance_of, sizes_of
    from ubsafe.generate.plan import run_prompts

    prompts = run_prompts(run)
    items = []
    for sid, gen, pid, index, seed in rows[
        ["sample_id", "generator", "prompt_id", "image_index", "seed"]
    ].itertuples(index=False):
        entry = get_generator(gen)
        p = prompts.loc[pid]
        width, height = sizes_of(entry, p["width"], p["height"])
        negative = p["negative_prompt"]
        items.append(
            Item(
                sample_id=str(sid),
                generator=str(gen),
                prompt_id=str(pid),
                image_index=int(index),
                seed=int(seed),
                prompt=str(p["prompt"]),
                negative_prompt=None if negative is None or pd.isna(negative) else str(negative),
                guidance=guidance_of(entry, p["guidance"]),
                steps=run.config.steps or entry.steps,
                width=width,
                height=height,
            )
        )
    return items


def batches(items: list[Item], size: int, *, i2p: bool) -> Iterator[list[Item]]:
    """Consecutive items with one setting, `size` at a time (I2P seeding: never across a prompt
    or one of the runner's 5-image calls)."""
    from ubsafe.generate.seeding import I2P_IMAGES_PER_CALL

    batch: list[Item] = []
    for item in items:
        if batch:
            last = batch[-1]
            split = (
                item.setting != last.setting
                or len(batch) == size
                or (
                    i2p
                    and (
                        item.prompt_id != last.prompt_id
                        or item.image_index // I2P_IMAGES_PER_CALL
                        != last.image_index // I2P_IMAGES_PER_CALL
                    )
                )
            )
            if split:
                yield batch
                batch = []
        batch.append(item)
    if batch:
        yield batch


def latents_for(run: Run, generator: Generator, batch: list[Item]) -> torch.Tensor:
    import torch

    from ubsafe.generate import seeding

    shape = generator.latent_shape(batch[0].width, batch[0].height)
    if run.config.seeding == "image":
        return torch.stack([seeding.image_latent(i.seed, i.image_index, shape) for i in batch])
    out = []
    for item in batch:
        stream = seeding.i2p_latents(
            item.seed,
            item.image_index + 1,
            shape,
            device=generator.device,
            dtype=getattr(torch, generator.precision),
        )
        out.append(stream[item.image_index])
    return torch.stack(out)


def png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _hold(shard: int) -> None:
    setting = os.environ.get(HOLD_ENV, "")
    if not setting or setting.split(":", 1)[0] != str(shard):
        return
    marker = Path(setting.split(":", 1)[1])
    marker.write_text(str(os.getpid()), encoding="utf-8")
    log.warning("shard %d holds before writing (%s exists)", shard, marker)
    while marker.exists():
        time.sleep(0.05)


class Meter:
    """A shard's progress bar: images/s, and the GPU's peak memory when on a GPU."""

    def __init__(self, desc: str, total: int, device: str):
        from ubsafe.progress import enabled

        self.device = device
        self.start = time.perf_counter()
        self.done = 0
        self.bar: Any = None
        if enabled():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is None:
            return
        self.bar.update(n)
        postfix = {"img/s": f"{self.rate:.2f}"}
        memory = self.gpu_memory()
        if memory:
            postfix["gpu"] = memory
        self.bar.set_postfix(postfix, refresh=False)

    @property
    def rate(self) -> float:
        seconds = time.perf_counter() - self.start
        return self.done / seconds if seconds > 0 else 0.0

    def gpu_memory(self) -> str:
        if not self.device.startswith("cuda"):
            return ""
        import torch

        return f"{torch.cuda.max_memory_allocated(self.device) / 2**30:.1f}GiB"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def generate_items(run: Run, items: list[Item], meter: Meter, shard: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    held = False
    for batch in _all_batches(run, items):
        generator = run_generator(run, batch[0].generator)
        from ubsafe.generate.pipeline import Request

        request = Request(
            prompts=[i.prompt for i in batch],
            negative_prompts=[i.negative_prompt for i in batch],
            latents=latents_for(run, generator, batch),
            guidance=batch[0].guidance,
            steps=batch[0].steps,
            width=batch[0].width,
            height=batch[0].height,
        )
        images = generator(request)
        for item, image in zip(batch, images, strict=True):
            records.append(record(item, image, generator.truncated(item.prompt)))
        meter.update(len(batch))
        if not held:
            held = True
            _hold(shard)
    return records


def _all_batches(run: Run, items: list[Item]) -> Iterator[list[Item]]:
    from ubsafe.stages.common import device_of

    size = 1 if device_of(run) == "cpu" else run.config.generation_batch
    yield from batches(items, size, i2p=run.config.seeding == "i2p")


def record(item: Item, image: Any, truncated: bool) -> dict[str, Any]:
    return {
        "sample_id": item.sample_id,
        "image": {"bytes": png_bytes(image), "path": f"{item.sample_id}.png"},
        "text": item.prompt,
        "prompt_id": item.prompt_id,
        "generator": item.generator,
        "image_index": np.int32(item.image_index),
        "seed": np.int64(item.seed),
        "guidance": float(item.guidance),
        "steps": np.int32(item.steps),
        "width": np.int32(item.width),
        "height": np.int32(item.height),
        "negative_prompt": item.negative_prompt,
        "truncated": bool(truncated),
    }


def run_shard(run: Run, shard: int) -> None:
    from ubsafe.generate.plan import run_prompts
    from ubsafe.stages.common import device_of

    rows = run.shard_plan(shard)
    items = items_of(run, rows)
    for name in dict.fromkeys(i.generator for i in items):
        run_generator(run, name)  # loaded before the clock starts: images/s is generation alone
    meter = Meter(f"generate shard {shard}", len(items), device_of(run))
    try:
        records = generate_items(run, items, meter, shard)
    finally:
        meter.close()
    frame = pd.DataFrame.from_records(records)
    categories = run_prompts(run)["categories"]
    frame.insert(3, "categories", [list(categories.loc[p]) for p in frame["prompt_id"]])
    shardfile.write(
        run.shard_path(NAME, shard, "parquet"), frame, shardfile.stage_meta(run, NAME, shard)
    )
    log.info(
        "generate shard %d: %d images in %.1f s (%.2f images/s), %d truncated prompts",
        shard,
        len(frame),
        time.perf_counter() - meter.start,
        meter.rate,
        int(frame["truncated"].sum()),
    )


def read_shard(run: Run, shard: int, columns: list[str] | None = None) -> pd.DataFrame:
    return shardfile.read(run.shard_path(NAME, shard, "parquet"), columns=columns)
