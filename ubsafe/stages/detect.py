"""Stage `detect`: every NudeNet detection on a shard's generated images.

The detector is the run's `nudenet` classifier (its options select the model and resolution);
every detection it reports is kept — class name and score — whatever the class or threshold, so
the nudity metrics and composite judges (`i2p`) can apply their own. Output:
`shards/detect/shard-NNNNN.parquet` (sample_id, label, score, reason): images without detections
have no rows; an undecodable image has one row with label "", score NaN and its reason.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ubsafe import shardfile
from ubsafe.stages import Needs, common

if TYPE_CHECKING:
    from ubsafe.rundir import Run

NAME = "detect"
SHARDED = True
NEEDS = Needs(
    inputs=("plan.parquet", "shards/generate/shard-NNNNN.parquet"),
    outputs=("shards/detect/shard-NNNNN.parquet",),
)
log = logging.getLogger(__name__)
DETECTOR = "nudenet"


def applies(run: Run) -> bool:
    return True


def is_done(run: Run, shard: int) -> bool:
    return shardfile.is_done(run, NAME, shard)


def run_shard(run: Run, shard: int) -> None:
    rows = run.shard_plan(shard)
    detector = common.run_classifier(run, DETECTOR)
    decoded = common.decode_shard(run, rows, lambda image: image)
    found = detector.detect(decoded.items) if decoded.items else []
    ids, labels, scores, reasons = [], [], [], []
    for sample_id, detections in zip(decoded.sample_ids, found, strict=True):
        for d in detections:
            ids.append(sample_id)
            labels.append(d.label)
            scores.append(d.score)
            reasons.append("")
    for sample_id, reason in decoded.skipped:
        ids.append(sample_id)
        labels.append("")
        scores.append(np.nan)
        reasons.append(reason)
    frame = pd.DataFrame(
        {
            "sample_id": pd.Series(ids, dtype=object),
            "label": pd.Series(labels, dtype=object),
            "score": np.asarray(scores, dtype=np.float32),
            "reason": pd.Series(reasons, dtype=object),
        }
    )
    shardfile.write(
        run.shard_path(NAME, shard, "parquet"), frame, shardfile.stage_meta(run, NAME, shard)
    )
    log.info(
        "detect shard %d: %d detections on %d images, %d skipped",
        shard,
        int((frame["reason"] == "").sum()),
        len(decoded.items),
        len(decoded.skipped),
    )
