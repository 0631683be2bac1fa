"""The judges' answers beside the score shards: `shards/score/shard-NNNNN.responses.parquet`.

One row per (classifier, sample) that a VLM judge decided: classifier, sample_id, pred, score,
tie_broken, converter, label_p<i> (0 safe / 1 unsafe / 2 unsure) and response_p<i> (the raw
answer) for each prompt asked. The score stage writes it (atomically) before the score shard itself,
so the score file stays the one completion marker; a sidecar counts only when its metadata names
this run's config hash and its shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ubsafe import shardfile

if TYPE_CHECKING:
    from ubsafe.rundir import Run
    from ubsafe.vlm.decision import VLMDecision

STAGE = "score-responses"
SUFFIX = "responses.parquet"


def path(run: Run, shard: int) -> Path:
    return run.shard_path("score", shard, SUFFIX)


def frame(decision: VLMDecision, classifier: str) -> pd.DataFrame:
    """The sidecar rows of one judge's decisions."""
    table = decision.to_frame()
    table.insert(0, "classifier", classifier)
    table.insert(len(table.columns), "converter", decision.converter)
    return table


def write(run: Run, shard: int, frames: Sequence[pd.DataFrame]) -> Path | None:
    """Write the shard's sidecar (nothing when no judge decided a row of it)."""
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    return shardfile.write(path(run, shard), table, shardfile.stage_meta(run, STAGE, shard))


def read(run: Run, shards: Iterable[int] | None = None) -> pd.DataFrame:
    """Every sidecar of the run (or of `shards`) that belongs to it; a foreign one raises.

    Shards where no judge decided a row have none; that is not an error.
    """
    parts = []
    for shard in range(run.n_shards) if shards is None else shards:
        where = path(run, shard)
        if not where.is_file():
            continue
        problem = shardfile.problem(where, shardfile.stage_meta(run, STAGE, shard))
        if problem is not None:
            raise ValueError(
                f"{where} does not belong to this run ({problem}); rerun the score stage for "
                f"shard {shard} (delete its score shard first)"
            )
        parts.append(shardfile.read(where))
    if not parts:
        return pd.DataFrame(columns=["classifier", "sample_id", "pred", "score", "tie_broken"])
    return pd.concat(parts, ignore_index=True)
