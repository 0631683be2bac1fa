"""Stage `score`: every classifier's clean decision on a shard.

Embedding classifiers run vectorised over the shard's cached embeddings; image classifiers (NudeNet,
VLM judges) over the decoded images. As in the paper, a classifier is scored on the categories it
covers; fitted classifiers (and perspective-llava, trained on the train split) only on the test
split. Rows of an external evaluation set carry the set's name as their category; classifiers that
cover every category judge them all. Output: `shards/score/shard-NNNNN.parquet` with one row per
(sample, classifier): `pred` (1 unsafe, 0 safe, -1 not scored), `score`, and `reason` for rows that
could not be scored (an undecodable image).

VLM judges get each row's category and sample id too; their per-prompt labels and raw answers go to
`shards/score/shard-NNNNN.responses.parquet` (`ubsafe.vlm.responses`), written before the score
file, which stays the shard's completion marker. A replayed judge (gpt4v) reads no image.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ubsafe import embeddings as store
from ubsafe import shardfile
from ubsafe.stages import Needs, common

if TYPE_CHECKING:
    from ubsafe.rundir import Run
    from ubsafe.vlm.classifier import VLMClassifier
    from ubsafe.vlm.decision import VLMDecision

NAME = "score"
SHARDED = True
NEEDS = Needs(
    inputs=("plan.parquet", "<cache>/.../clean/shard-NNNNN.h5", "dataset images", "fitted/"),
    outputs=("shards/score/shard-NNNNN.parquet", "shards/score/shard-NNNNN.responses.parquet"),
    gpu=True,
)
log = logging.getLogger(__name__)
COLUMNS = ("sample_id", "classifier", "pred", "score", "stage", "reason")


def applies(run: Run) -> bool:
    return bool(run.config.classifiers)


def is_done(run: Run, shard: int) -> bool:
    return shardfile.is_done(run, NAME, shard)


def coverage(run: Run, name: str) -> tuple[str, ...]:
    from ubsafe.classifiers import get_entry

    return tuple(run.config.coverage.get(name) or get_entry(name).categories)


def covers(run: Run, name: str, category: str) -> bool:
    """Whether `name` is judged on `category` (one covering all 11 also judges outside categories,
    such as an external evaluation set's)."""
    from ubsafe.taxonomy import CATEGORIES

    covered = coverage(run, name)
    return category in covered or (set(CATEGORIES) <= set(covered) and category not in CATEGORIES)


def scored_mask(run: Run, rows: pd.DataFrame, name: str) -> np.ndarray:
    """Rows this classifier is judged on: covered categories (every category outside the
    taxonomy when it covers them all; every generated image), in the splits it is scored on
    (fitted ones: test)."""
    from ubsafe.classifiers import get_entry
    from ubsafe.generate.plan import GENERATED
    from ubsafe.taxonomy import CATEGORIES

    covered = coverage(run, name)
    mask = rows["category"].isin(covered).to_numpy(dtype=bool, copy=True)
    if set(CATEGORIES) <= set(covered):
        mask |= ~rows["category"].isin(CATEGORIES).to_numpy(dtype=bool)
    # generated images have no category of their own: every classifier judges them
    mask |= (rows["category"] == GENERATED).to_numpy(dtype=bool)
    mask &= rows["split"].isin(get_entry(name).scored_splits).to_numpy(dtype=bool)
    return mask


def encoder_for(run: Run, name: str) -> str:
    from ubsafe.classifiers import get_entry

    entry = get_entry(name)
    return run.config.encoder if entry.encoder == "run" else entry.encoder


def clean_embeddings(run: Run, encoder_key: str, shard: int) -> store.ShardEmbeddings:
    from ubsafe.stages.embed import cache_key

    return store.read_shard(run, cache_key(run, encoder_key), "clean", shard)


def frame(
    sample_ids: Any, name: str, pred: Any, score: Any, reason: Any, stage: str
) -> pd.DataFrame:
    """Rows of the score shard; `stage` names where an unscored row's image failed (embed/score)."""
    n = len(sample_ids)
    reasons = pd.Series(reason, dtype=object)
    return pd.DataFrame(
        {
            "sample_id": pd.Series(sample_ids, dtype=object),
            "classifier": [name] * n,
            "pred": np.asarray(pred, dtype=np.int8),
            "score": np.asarray(score, dtype=np.float32),
            "stage": np.where(reasons.to_numpy() == "", "", stage).astype(object) if n else [],
            "reason": reasons,
        }
    )


def score_embeddings(run: Run, name: str, rows: pd.DataFrame, shard: int) -> pd.DataFrame:
    part = clean_embeddings(run, encoder_for(run, name), shard)
    position = {sid: i for i, sid in enumerate(part.sample_ids)}
    skipped = dict(part.skipped)
    wanted = rows["sample_id"].tolist()
    have = [sid for sid in wanted if sid in position]
    pred = np.full(len(wanted), -1, np.int8)
    score = np.full(len(wanted), np.nan, np.float32)
    if have:
        decided_pred, decided_score = run_classifier(run, name).decide(
            part.embeddings[[position[s] for s in have]]
        )
        index = {sid: i for i, sid in enumerate(wanted)}
        at = [index[s] for s in have]
        pred[at] = decided_pred
        score[at] = decided_score
    reason = [skipped.get(sid, "no embedding") if sid not in position else "" for sid in wanted]
    return frame(wanted, name, pred, score, reason, "embed")


def score_images(run: Run, name: str, rows: pd.DataFrame) -> pd.DataFrame:
    classifier = run_classifier(run, name)
    decoded = common.decode_shard(run, rows, lambda image: image)
    pred = np.full(len(rows), -1, np.int8)
    score = np.full(len(rows), np.nan, np.float32)
    if decoded.items:
        got_pred, got_score = classifier.decide_images(decoded.items)
        index = {sid: i for i, sid in enumerate(rows["sample_id"])}
        at = [index[s] for s in decoded.sample_ids]
        pred[at] = got_pred
        score[at] = got_score
    skipped = dict(decoded.skipped)
    reason = [skipped.get(sid, "") for sid in rows["sample_id"]]
    return frame(rows["sample_id"].tolist(), name, pred, score, reason, "score")


def score_judge(
    run: Run, name: str, judge: VLMClassifier, rows: pd.DataFrame
) -> tuple[pd.DataFrame, VLMDecision | None]:
    """A VLM judge on `rows`: the score rows, and its full decision (answers, per-prompt labels);
    None when no row's image decodes."""
    wanted = rows["sample_id"].tolist()
    skipped: dict[str, str] = {}
    if judge.reads_images:
        decoded = common.decode_shard(run, rows, lambda image: image)
        skipped = dict(decoded.skipped)
        kept = rows.set_index("sample_id").loc[decoded.sample_ids].reset_index()
        images = decoded.items
    else:
        kept, images = rows, None
    pred = np.full(len(wanted), -1, np.int8)
    score = np.full(len(wanted), np.nan, np.float32)
    decided = judge.judge_rows(kept, images) if len(kept) else None
    if decided is not None:
        index = {sid: i for i, sid in enumerate(wanted)}
        at = [index[s] for s in decided.sample_ids]
        pred[at] = decided.pred
        score[at] = decided.score
        log.info(
            "%s: %d rows decided, %d by a tie-break (converter %s)",
            name,
            len(decided),
            int(decided.tie_broken.sum()),
            decided.converter,
        )
    reason = [skipped.get(sid, "") for sid in wanted]
    return frame(wanted, name, pred, score, reason, "score"), decided


def run_classifier(run: Run, name: str) -> Any:
    return common.run_classifier(run, name)


def run_shard(run: Run, shard: int) -> None:
    from ubsafe.classifiers import get_entry
    from ubsafe.vlm import responses
    from ubsafe.vlm.classifier import as_vlm

    rows = run.shard_plan(shard)
    parts = []
    answers = []
    for name in run.config.classifiers:
        chosen = rows[scored_mask(run, rows, name)]
        if chosen.empty:
            continue
        if get_entry(name).input == "embedding":
            parts.append(score_embeddings(run, name, chosen, shard))
        elif (judge := as_vlm(run_classifier(run, name))) is not None:
            part, decided = score_judge(run, name, judge, chosen)
            parts.append(part)
            if decided is not None:
                answers.append(responses.frame(decided, name))
        else:
            parts.append(score_images(run, name, chosen))
        log.info("shard %d: %s scored %d rows", shard, name, len(chosen))
    result = pd.concat(parts, ignore_index=True) if parts else frame([], "", [], [], [], "score")
    # The answers first: the score file, written last, is what marks the shard done.
    responses.write(run, shard, answers)
    shardfile.write(
        run.shard_path(NAME, shard, "parquet"), result, shardfile.stage_meta(run, NAME, shard)
    )
