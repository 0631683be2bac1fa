"""Stage `finetune`: PerspectiveVision's LoRA fine-tuning of LLaVA-1.5 on the run's train split.

Runs when `perspective-llava` is among the classifiers and no adapter made elsewhere is configured
(`perspective.adapter`); before `score`, which loads the adapter. One task for the whole run (a GPU
job under `ubsafe submit`): the paper's training set is built from every train row (both sources,
all categories; `ubsafe.perspective.trainset`), the model is fine-tuned with the paper's recipe
as `perspective.lora` overrides it, and the adapter appears at `fitted/perspective-llava/` all at
once (written under a temporary name, then renamed). `fitted/perspective-llava.json`, written last,
records the config and data it was trained for: it is the completion marker.

Train images that do not decode are left out of the training set and counted in the marker.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ubsafe import atomic
from ubsafe.stages import Needs
from ubsafe.vlm.classifier import PERSPECTIVE

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from ubsafe.config import RunConfig
    from ubsafe.rundir import Run

NAME = "finetune"
SHARDED = False
NEEDS = Needs(
    inputs=("plan.parquet", "dataset images (train rows)"),
    outputs=("fitted/perspective-llava/", "fitted/perspective-llava.json"),
    gpu=True,
)
log = logging.getLogger(__name__)


def trained(config: RunConfig) -> tuple[str, ...]:
    """The classifiers this stage fine-tunes for a run with `config`: judges whose entry needs an
    adapter ([judge] adapter), unless `perspective.adapter` names one made elsewhere."""
    from ubsafe.classifiers import get_entry

    if config.perspective.adapter:
        return ()
    return tuple(
        name
        for name in config.classifiers
        if (judge := get_entry(name).judge) is not None and judge.adapter
    )


def applies(run: Run) -> bool:
    return bool(trained(run.config))


def adapter_dir(run: Run) -> Path:
    return run.fitted_dir / PERSPECTIVE


def marker(run: Run) -> Path:
    return run.fitted_dir / f"{PERSPECTIVE}.json"


def expected_record(run: Run) -> dict[str, Any]:
    return {
        "classifier": PERSPECTIVE,
        "config_hash": run.config.config_hash(),
        "fingerprint": run.dataset_fingerprint,
    }


def is_done(run: Run, shard: int) -> bool:
    try:
        record = json.loads(marker(run).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    want = expected_record(run)
    return (
        all(record.get(k) == v for k, v in want.items())
        and (adapter_dir(run) / "adapter_config.json").is_file()
    )


def lora_settings(run: Run) -> Any:
    """The paper's recipe with the run's `perspective.lora` overrides; seeded by the run's seed."""
    from ubsafe.perspective.lora import LoraSettings

    overrides = {"seed": run.config.seed, **run.config.perspective.lora}
    return LoraSettings(**overrides)


def train_rows(run: Run) -> pd.DataFrame:
    """The train split in dataset order (UnsafeBench ids `train-<row>` sort in that order)."""
    plan = run.plan
    rows = plan[plan["split"] == "train"]
    return rows[["sample_id", "label", "category", "source", "file", "row"]].reset_index(drop=True)


def image_store(run: Run, rows: pd.DataFrame) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """The encoded bytes of every train image that decodes (decoded again when used), and the
    (sample id, reason) of those that do not."""
    from ubsafe.data.images import DecodeError, decode_image
    from ubsafe.stages import common

    store: dict[str, bytes] = {}
    skipped: list[tuple[str, str]] = []
    for sample_id, data, reason in common.image_bytes(run, rows):
        if data is None:
            skipped.append((sample_id, reason))
            continue
        try:
            decode_image(data)
        except DecodeError as exc:
            skipped.append((sample_id, str(exc)))
            continue
        store[sample_id] = data
    return store, skipped


def device_and_dtype(run: Run) -> tuple[str, str | None]:
    """The run's device; bfloat16 weights on a GPU (the paper trained in bf16), float32 on CPU."""
    from ubsafe.stages.common import device_of

    device = device_of(run)
    return device, ("bfloat16" if device.startswith("cuda") else None)


def run_shard(run: Run, shard: int) -> None:
    from ubsafe.data.images import decode_image
    from ubsafe.perspective.lora import fine_tune

    rows = train_rows(run)
    store, skipped = image_store(run, rows)
    rows = rows[rows["sample_id"].isin(store)].reset_index(drop=True)
    if rows.empty or rows["label"].nunique() < 2:
        raise ValueError(
            f"perspective-llava is fine-tuned on the train split, but {run.root} has "
            f"{len(rows)} decodable train images" + (" of one label" if len(rows) else "") + ". "
            "fix: use a dataset with a labelled train split, or set perspective.adapter to an "
            "adapter trained elsewhere"
        )

    def load_image(sample_id: str) -> Image.Image:
        return decode_image(store[sample_id])

    settings = lora_settings(run)
    device, dtype = device_and_dtype(run)
    start = time.perf_counter()
    folder = fine_tune(
        run.config.weights_dir,
        rows,
        load_image,
        adapter_dir(run),
        settings=settings,
        device=device,
        dtype=dtype,
        sources=tuple(run.config.source_map),
    )
    report = json.loads((folder / "train_report.json").read_text(encoding="utf-8"))
    record = {
        **expected_record(run),
        "n_train": len(rows),
        "n_unsafe": int(rows["label"].sum()),
        "skipped": [{"sample_id": s, "reason": r} for s, r in skipped],
        "steps": report["steps"],
        "seconds": round(time.perf_counter() - start, 3),
    }
    atomic.write_text(marker(run), json.dumps(record, indent=2) + "\n")
    log.info(
        "fine-tuned perspective-llava on %d train images (%d skipped), %d steps, %.0f s",
        len(rows),
        len(skipped),
        report["steps"],
        record["seconds"],
    )
