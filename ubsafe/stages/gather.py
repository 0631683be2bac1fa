"""Stage `gather`: the judged generated images of a mitigation run, in `results/`.

Reads only the disk (every generate, score and detect shard is checked first; missing ones are
named) and writes:

- `generated.parquet`: one row per (generator, prompt_id, image_index, judge) — sample_id,
  generator, prompt_id, image_index (int32), seed (int64), categories (list of ubsafe names),
  judge (a classifier of the run, a composite judge such as `i2p`, or its detector part
  `i2p:nudenet`), pred (int8, 1 = unsafe), score (float64, NaN where none);
- `detections.parquet`: every NudeNet detection — sample_id, generator, prompt_id, image_index,
  label, score (float32);
- `generation.json` (written last, the stage's completion marker: counts, prompts cut at the text
  encoder's 77 tokens per generator, images a judge or the detector could not read, the config
  hash).

The reduce that follows writes the mitigation tables from these two files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ubsafe import atomic, shardfile
from ubsafe.stages import Needs

if TYPE_CHECKING:
    from ubsafe.rundir import Run

NAME = "gather"
SHARDED = False
NEEDS = Needs(
    inputs=(
        "plan.parquet",
        "prompts.parquet",
        "shards/generate/",
        "shards/score/",
        "shards/detect/",
    ),
    outputs=("results/generated.parquet", "results/detections.parquet", "results/generation.json"),
)
log = logging.getLogger(__name__)

INPUT_STAGES = ("generate", "score", "detect")
GENERATED_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("generator", pa.string()),
        ("prompt_id", pa.string()),
        ("image_index", pa.int32()),
        ("seed", pa.int64()),
        ("categories", pa.list_(pa.string())),
        ("judge", pa.string()),
        ("pred", pa.int8()),
        ("score", pa.float64()),
    ]
)
DETECTIONS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("generator", pa.string()),
        ("prompt_id", pa.string()),
        ("image_index", pa.int32()),
        ("label", pa.string()),
        ("score", pa.float32()),
    ]
)
OUTPUTS = ("generated.parquet", "detections.parquet", "generation.json")
MARKER = "generation.json"


def applies(run: Run) -> bool:
    return True


def is_done(run: Run, shard: int) -> bool:
    try:
        summary = json.loads((run.results_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        summary.get("config_hash") == run.config.config_hash()
        and not summary.get("missing_shards")
        and all((run.results_dir / name).is_file() for name in OUTPUTS)
    )


def run_shard(run: Run, shard: int) -> None:
    gather_run(run, allow_missing=False)


def judges_of(run: Run) -> list[str]:
    """The run's composite judges: those asked for, or (unset) every one whose classifier the run
    scores."""
    from ubsafe.generate.judges import list_judges

    if run.config.judges is not None:
        return list(run.config.judges)
    return [j.name for j in list_judges() if j.classifier in run.config.classifiers]


def input_stages(run: Run) -> list[str]:
    """The stages whose shards the results read (score: only when the run has classifiers)."""
    from ubsafe.stages import STAGES

    return [stage for stage in INPUT_STAGES if STAGES[stage].applies(run)]


def check_inputs(run: Run) -> dict[str, list[tuple[int, str]]]:
    problems: dict[str, list[tuple[int, str]]] = {}
    for stage in input_stages(run):
        for s in range(run.n_shards):
            path = run.shard_path(stage, s, "parquet")
            why = shardfile.problem(path, shardfile.stage_meta(run, stage, s))
            if why is not None:
                problems.setdefault(stage, []).append((s, why))
    return problems


def _read(run: Run, stage: str, shards: list[int], columns: list[str]) -> pd.DataFrame:
    if stage not in input_stages(run):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    parts = [shardfile.read(run.shard_path(stage, s, "parquet"), columns=columns) for s in shards]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def gather_run(run: Run, *, allow_missing: bool = False) -> list[Path]:
    from ubsafe.generate.judges import get_judge, judge_rows
    from ubsafe.generate.plan import run_prompts
    from ubsafe.stages.reduce import MissingShards

    missing = check_inputs(run)
    if missing and not allow_missing:
        raise MissingShards(run, missing)
    lost = {s for items in missing.values() for s, _ in items}
    shards = [s for s in range(run.n_shards) if s not in lost]
    plan = run.plan[run.plan["shard"].isin(shards)].set_index("sample_id")
    scores = _read(run, "score", shards, ["sample_id", "classifier", "pred", "score", "reason"])
    found = _read(run, "detect", shards, ["sample_id", "label", "score", "reason"])
    detections = found[found["reason"] == ""]

    rows = [
        scores.loc[scores["pred"] >= 0, ["sample_id", "classifier", "pred", "score"]].rename(
            columns={"classifier": "judge"}
        )
    ]
    for name in judges_of(run):
        rows.append(judge_rows(get_judge(name), scores, detections))
    judged = pd.concat(rows, ignore_index=True)
    categories = run_prompts(run)["categories"]
    facts = plan.loc[judged["sample_id"]]
    generated = pd.DataFrame(
        {
            "sample_id": judged["sample_id"].to_numpy(object),
            "generator": facts["generator"].to_numpy(),
            "prompt_id": facts["prompt_id"].to_numpy(),
            "image_index": facts["image_index"].to_numpy(np.int32),
            "seed": facts["seed"].to_numpy(np.int64),
            "categories": pd.Series(
                [list(categories.loc[p]) for p in facts["prompt_id"]], dtype=object
            ),
            "judge": judged["judge"].to_numpy(),
            "pred": judged["pred"].to_numpy(np.int8),
            "score": judged["score"].to_numpy(np.float64),
        }
    ).sort_values(["generator", "prompt_id", "image_index", "judge"], kind="stable")

    det_facts = plan.loc[detections["sample_id"]]
    detection_table = pd.DataFrame(
        {
            "sample_id": detections["sample_id"].to_numpy(),
            "generator": det_facts["generator"].to_numpy(),
            "prompt_id": det_facts["prompt_id"].to_numpy(),
            "image_index": det_facts["image_index"].to_numpy(np.int32),
            "label": detections["label"].to_numpy(),
            "score": detections["score"].to_numpy(np.float32),
        }
    )
    results = run.results_dir
    results.mkdir(parents=True, exist_ok=True)
    written = [
        _write(results / "generated.parquet", generated, GENERATED_SCHEMA),
        _write(results / "detections.parquet", detection_table, DETECTIONS_SCHEMA),
    ]
    undetected = found.loc[found["reason"] != "", ["sample_id", "reason"]]
    record = summary(run, shards, missing, generated)
    record["undetected_images"] = dict(
        zip(undetected["sample_id"], undetected["reason"], strict=True)
    )
    atomic.write_text(results / MARKER, json.dumps(record, indent=2, sort_keys=True) + "\n")
    written.append(results / MARKER)
    log.info("gathered %d judged rows of %d images", len(generated), len(plan))
    return written


def _write(path: Path, frame: pd.DataFrame, schema: pa.Schema) -> Path:
    from ubsafe.results import result_file

    frame = result_file(path.name).conform(frame.reset_index(drop=True))
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def summary(
    run: Run,
    shards: list[int],
    missing: dict[str, list[tuple[int, str]]],
    generated: pd.DataFrame,
) -> dict[str, Any]:
    images = _read(run, "generate", shards, ["generator", "prompt_id", "truncated"])
    truncated = images[images["truncated"]].drop_duplicates(["generator", "prompt_id"])
    c = run.config
    return {
        "config_hash": c.config_hash(),
        "target": c.target,
        "prompts": c.dataset,
        "fingerprint": run.dataset_fingerprint,
        "n_prompts": int(run.plan["prompt_id"].nunique()),
        "n_images": len(run.plan),
        "n_shards": run.n_shards,
        "generators": list(c.generators),
        "images_per_prompt": c.images_per_prompt,
        "seeding": c.seeding,
        "classifiers": list(c.classifiers),
        "judges": sorted(generated["judge"].unique().tolist()),
        "n_judged_rows": len(generated),
        "truncated_prompts": {g: int((truncated["generator"] == g).sum()) for g in c.generators},
        "missing_shards": {stage: [s for s, _ in items] for stage, items in missing.items()},
    }
