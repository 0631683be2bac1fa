"""Stage `reduce`: merge shard outputs into `results/`, with confidence intervals.

Reads only the disk: every expected shard file is checked first, and missing or foreign ones are
named — the reduce refuses partial results unless `allow_missing`, and then lists the rows it lost
in skipped.csv. Shards stream through one at a time (memory grows with rows, not with shards).

Writes `predictions.parquet`, `effectiveness.csv`, `gaps.csv`, `pairs.csv`, `skipped.csv` (rows
that could not be scored, and why), `unscored.csv` (rows no classifier is meant to score: an
uncovered category, or the train split of classifiers fitted on it), `summary.json`, and for
robustness runs `robustness.csv` and `robustness_family.csv` (family means with intervals);
`shift.csv` when the run has real and AI-generated images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ubsafe import atomic, shardfile
from ubsafe.results import result_file
from ubsafe.stages import Needs
from ubsafe.targets import runs_stage
from ubsafe.taxonomy import NO_LABEL

if TYPE_CHECKING:
    from ubsafe.rundir import Run

NAME = "reduce"
SHARDED = False
NEEDS = Needs(
    inputs=("plan.parquet", "shards/score/", "shards/compare/", "<cache>/.../clean/ (shift)"),
    outputs=("results/",),
    kernels=True,
)
log = logging.getLogger(__name__)

PREDICTIONS = result_file("predictions.parquet")
SKIPPED = result_file("skipped.csv")
UNSCORED = result_file("unscored.csv")


class MissingShards(RuntimeError):
    """Shard outputs the reduce needs are absent or do not belong to this run."""

    def __init__(self, run: Run, problems: dict[str, list[tuple[int, str]]]):
        self.problems = problems
        lines = [f"{run.root}: results would be partial; shard outputs missing or not usable:"]
        for stage, items in problems.items():
            shards = ", ".join(str(s) for s, _ in items[:30])
            more = f" (+{len(items) - 30} more)" if len(items) > 30 else ""
            lines.append(f"  {stage}: {len(items)} shard(s): {shards}{more}")
            for shard, why in items[:3]:
                lines.append(f"    shard {shard}: {why}")
        lines.append(
            "fix: run the same `ubsafe run` / `ubsafe submit` command again (it runs only what is "
            "missing; `ubsafe status` shows errors), or `ubsafe reduce --allow-missing` for "
            "partial results"
        )
        super().__init__("\n".join(lines))


def applies(run: Run) -> bool:
    return True


def labelled(run: Run) -> bool:
    """Whether the run's samples carry labels (the tables of effectiveness need them)."""
    return not bool((run.plan["label"] == NO_LABEL).any())


#: Why a run without labels has no effectiveness tables (summary.json's notes, the report, the CLI).
UNLABELLED_NOTE = (
    "the dataset has no labels: effectiveness.csv, gaps.csv and pairs.csv (F1 and the other "
    "metrics need ground truth) are not written; predictions.parquet holds every decision"
)


def not_attackable(run: Run) -> list[str]:
    """The run's classifiers that no configured attack can reach (their entries say so: no
    gradients, or a judge whose `[judge] attacks` lists none of them); robustness.csv has their
    perturbation rows only."""
    from ubsafe.stages import attack
    from ubsafe.stages.compare import judge_attacks

    if not robust(run) or not run.config.attacks:
        return []
    attacked = set(attack.attackable(run))
    return [
        name
        for name in run.config.classifiers
        if name not in attacked and not judge_attacks(run, name)
    ]


def notes(run: Run) -> list[str]:
    """What summary.json, the CLI and the report say about tables a run leaves out or thins."""
    out = [] if labelled(run) else [UNLABELLED_NOTE]
    unreachable = not_attackable(run)
    if unreachable:
        out.append(
            f"not attackable: {', '.join(unreachable)} (by {', '.join(run.config.attacks)}; "
            "their registry entries list no such attack); robustness.csv has their perturbation "
            "rows only"
        )
    return out


def outputs(run: Run) -> list[Path]:
    names = ["predictions.parquet", "skipped.csv", "unscored.csv", "summary.json"]
    if labelled(run):
        names.insert(1, "effectiveness.csv")
    if robust(run):
        names += ["robustness.csv", "robustness_family.csv"]
    return [run.results_dir / name for name in names]


def robust(run: Run) -> bool:
    return runs_stage(run.config.target, "compare")


def is_done(run: Run, shard: int) -> bool:
    """Done when summary.json (written last) records this config and every input shard."""
    try:
        summary = json.loads((run.results_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        summary.get("config_hash") == run.config.config_hash()
        and summary.get("target") == run.config.target
        and not summary.get("missing_shards")
        and all(path.is_file() for path in outputs(run))
    )


def run_shard(run: Run, shard: int) -> None:
    reduce_run(run, allow_missing=False)


def input_stages(run: Run) -> list[str]:
    """The stages whose shard outputs the results depend on (attack: through compare)."""
    from ubsafe.stages import attack

    stages = ["score"]
    if robust(run):
        if attack.applies(run):
            stages.append("attack")
        stages.append("compare")
    return stages


def shard_problem(run: Run, stage: str, shard: int) -> str | None:
    if stage == "attack":
        from ubsafe.stages import attack

        if attack.is_done(run, shard):
            return None
        error = run.error_path(stage, shard)
        return f"failed (see {error})" if error.is_file() else "missing"
    path = run.shard_path(stage, shard, "parquet")
    why = shardfile.problem(path, shardfile.stage_meta(run, stage, shard))
    if why == "missing" and run.error_path(stage, shard).is_file():
        return f"failed (see {run.error_path(stage, shard)})"
    return why


def check_inputs(run: Run) -> dict[str, list[tuple[int, str]]]:
    """Per input stage, the shards whose output is missing, failed or does not match the run."""
    problems: dict[str, list[tuple[int, str]]] = {}
    for stage in input_stages(run):
        for shard in range(run.n_shards):
            why = shard_problem(run, stage, shard)
            if why is not None:
                problems.setdefault(stage, []).append((shard, why))
    return problems


@dataclass
class Merged:
    predictions: pd.DataFrame  # PREDICTIONS' columns, scored rows only
    skipped: pd.DataFrame  # sample_id, stage, reason: rows that could not be scored


def iter_score_shards(run: Run, shards: list[int]) -> Iterator[pd.DataFrame]:
    for shard in shards:
        yield shardfile.read(run.shard_path("score", shard, "parquet"))


def merge_scores(run: Run, shards: list[int], out: Path) -> Merged:
    """Stream score shards into predictions.parquet (atomically); return what the metrics need."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan = run.plan.set_index("sample_id")
    kept: list[pd.DataFrame] = []
    skipped: list[pd.DataFrame] = []
    schema = pa.schema(
        [
            (c.name, pa.string() if c.dtype == "str" else pa.from_numpy_dtype(c.dtype))
            for c in PREDICTIONS.columns
        ]
    )
    with atomic.atomic_path(out) as tmp:
        writer = pq.ParquetWriter(tmp, schema)
        try:
            for part in iter_score_shards(run, shards):
                bad = part[part["pred"] < 0]
                if len(bad):
                    skipped.append(bad[list(SKIPPED.names)])
                good = part[part["pred"] >= 0]
                facts = plan.loc[good["sample_id"], ["category", "source_kind", "label"]]
                frame = pd.DataFrame(
                    {
                        "sample_id": good["sample_id"].to_numpy(),
                        "classifier": good["classifier"].to_numpy(),
                        "category": facts["category"].to_numpy(),
                        "source": facts["source_kind"].to_numpy(),
                        "label": facts["label"].to_numpy(np.int8),
                        "pred": good["pred"].to_numpy(np.int8),
                        "score": good["score"].to_numpy(np.float32),
                    }
                )
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                kept.append(frame)
        finally:
            writer.close()
    predictions = pd.concat(kept, ignore_index=True) if kept else PREDICTIONS.empty()
    skipped_rows = (
        pd.concat(skipped, ignore_index=True).drop_duplicates() if skipped else SKIPPED.empty()
    )
    return Merged(predictions, skipped_rows)


def unscored_reasons(
    run: Run, merged: Merged, lost_shards: list[int]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plan rows in neither predictions nor skipped, split in two:

    - skipped (could not be scored): rows of a score shard lost under `--allow-missing`, rows a
      score shard should have held but does not;
    - unscored by design: no configured classifier covers the row's category, or every covering
      classifier is scored on other splits (a probe fitted on the train split judges the test
      split only). These go to `unscored.csv`, not `skipped.csv`.
    """
    from ubsafe.classifiers import get_entry
    from ubsafe.stages.score import covers

    plan = run.plan
    accounted = set(merged.predictions["sample_id"]) | set(merged.skipped["sample_id"])
    rest = plan[~plan["sample_id"].isin(accounted)]
    lost = set(lost_shards)
    skipped, unscored = [], []
    splits = {n: get_entry(n).scored_splits for n in run.config.classifiers}
    for sample_id, shard, category, split in rest[
        ["sample_id", "shard", "category", "split"]
    ].itertuples(index=False):
        if shard in lost:
            skipped.append(
                (sample_id, "reduce", f"shard {shard}: score output missing (--allow-missing)")
            )
            continue
        covering = [n for n in run.config.classifiers if covers(run, n, category)]
        if not covering:
            unscored.append((sample_id, f"no configured classifier covers category {category!r}"))
        elif all(splits[n] and split not in splits[n] for n in covering):
            unscored.append(
                (
                    sample_id,
                    f"{split} split; {', '.join(covering)} "
                    f"{'is' if len(covering) == 1 else 'are'} scored on the "
                    f"{'/'.join(sorted({s for n in covering for s in splits[n]}))} split only",
                )
            )
        else:
            skipped.append((sample_id, "score", "no score output for this row"))
    return (
        pd.DataFrame(skipped, columns=list(SKIPPED.names)),
        pd.DataFrame(unscored, columns=list(UNSCORED.names)),
    )


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Write a results table in its schema's columns (`ubsafe.results`); text cells that a
    spreadsheet would run as a formula get a `'`."""
    from ubsafe.escape import csv_frame

    frame = result_file(path.name).conform(frame)
    with atomic.atomic_path(path) as tmp:
        csv_frame(frame).to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
    return path


def summary(
    run: Run, missing: dict[str, list[tuple[int, str]]], merged: Merged, n_skipped: int
) -> dict[str, Any]:
    from ubsafe.findings import caveats
    from ubsafe.stages.preflight import encoders_needed
    from ubsafe.stages.score import coverage

    c = run.config
    return {
        "config_hash": c.config_hash(),
        "target": c.target,
        "dataset": c.dataset,
        "dataset_format": c.dataset_format,
        "fingerprint": run.dataset_fingerprint,
        "n_samples": len(run.plan),
        "n_shards": run.n_shards,
        "n_predictions": len(merged.predictions),
        "encoder": c.encoder,
        "encoders": encoders_needed(c),
        "classifiers": list(c.classifiers),
        "coverage": {name: list(coverage(run, name)) for name in c.classifiers},
        "bootstrap": c.bootstrap,
        "ci_level": c.ci_level,
        "seed": c.seed,
        "attack_mode": c.attack.mode,
        "missing_shards": {stage: [s for s, _ in items] for stage, items in missing.items()},
        "n_skipped": n_skipped,
        "caveats": caveats(c),
        "labelled": labelled(run),
        "not_attackable": not_attackable(run),
        "notes": notes(run),
        **generation_summary(run),
    }


def generation_summary(run: Run) -> dict[str, Any]:
    """A run that generated its images: the gather stage's record of them (prompts cut at 77
    tokens, images per generator, ...), under `generation`."""
    path = run.results_dir / "generation.json"
    if not path.is_file():
        return {}
    return {"generation": json.loads(path.read_text(encoding="utf-8"))}


def reduce_run(run: Run, *, allow_missing: bool = False) -> list[Path]:
    """Write results/ from the shards on disk; refuse (naming them) when shards are missing."""
    from ubsafe import metrics

    missing = check_inputs(run)
    if missing and not allow_missing:
        raise MissingShards(run, missing)
    lost = sorted({s for s, _ in missing.get("score", [])})
    present = [s for s in range(run.n_shards) if s not in set(lost)]
    results = run.results_dir
    results.mkdir(parents=True, exist_ok=True)
    written = [results / "predictions.parquet"]
    merged = merge_scores(run, present, written[0])
    also_skipped, unscored = unscored_reasons(run, merged, lost)
    skipped = pd.concat([merged.skipped, also_skipped], ignore_index=True)
    skipped = skipped.sort_values(["sample_id", "stage", "reason"], kind="stable")
    written.append(write_csv(results / "skipped.csv", skipped))
    unscored = unscored.sort_values(["sample_id", "reason"], kind="stable")
    written.append(write_csv(results / "unscored.csv", unscored))

    if labelled(run):
        tables = metrics.effectiveness_tables(merged.predictions, run.config)
        for name, table in tables.items():
            written.append(write_csv(results / f"{name}.csv", table))
    elif run.images_in_run:
        # generated images have no ground truth by design: said in summary.json, not a warning
        log.info("%s: %s", run.root, UNLABELLED_NOTE)
    else:
        log.warning("%s: %s", run.root, UNLABELLED_NOTE)
    if robust(run):
        # a shard whose attack failed has no complete comparison: left out, named in summary.json
        unusable = {x for stage in ("attack", "compare") for x, _ in missing.get(stage, [])}
        compare_shards = [s for s in range(run.n_shards) if s not in unusable]
        written.append(
            write_csv(results / "robustness.csv", metrics.robustness_table(run, compare_shards))
        )
        family = metrics.robustness_family_table(run, compare_shards)
        written.append(write_csv(results / "robustness_family.csv", family))
    shift = write_shift(run)
    if shift is not None:
        written.append(shift)
    written += write_mitigation(run)
    record = summary(run, missing, merged, len(skipped))
    atomic.write_text(results / "summary.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    written.append(results / "summary.json")
    log.info("reduced %d predictions into %s", len(merged.predictions), results)
    return written


def write_mitigation(run: Run) -> list[Path]:
    """The mitigation tables when the run generated images (results/generated.parquet)."""
    from ubsafe.mitigation import write_mitigation as mitigation_writer

    return mitigation_writer(run)


def write_shift(run: Run) -> Path | None:
    """shift.csv (and the projection for the report) when the run has real and AI images."""
    from ubsafe.shift import write_shift as shift_writer

    return shift_writer(run)
