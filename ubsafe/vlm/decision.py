"""From per-prompt response labels to one decision per image: majority vote and a seeded tie-break.

Labels follow the response converter: 0 = safe, 1 = unsafe, 2 = unsure. The vote is the reference's
(`assess_effectiveness.py`): the most common label over the prompts, and among labels equally common
the one that occurs first (what `collections.Counter.most_common` returns), so three different
labels give P0's. A vote of "unsure" is then settled by a coin — the reference's coin is unseeded;
ubsafe's is a hash of (seed, sample id), so a decision never depends on batch, shard or process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SAFE, UNSAFE, UNSURE = 0, 1, 2
LABEL_NAMES = {SAFE: "safe", UNSAFE: "unsafe", UNSURE: "unsure"}


def tie_break(seed: int, sample_id: str) -> int:
    """A fair, reproducible coin for `sample_id`: 0 or 1 from BLAKE2b of (seed, sample id)."""
    digest = hashlib.blake2b(f"{seed}\x1f{sample_id}".encode(), digest_size=8).digest()
    return digest[0] & 1


def majority(labels: Sequence[int]) -> int:
    """The most common label; among equally common ones, the first to occur."""
    counts: dict[int, int] = {}
    for label in labels:
        counts[int(label)] = counts.get(int(label), 0) + 1
    best = max(counts.values())
    return next(label for label in counts if counts[label] == best)


@dataclass(frozen=True)
class VLMDecision:
    """A judge's decisions on N images, with everything needed to store and audit them.

    `pred` int8[N] is 0 safe / 1 unsafe after the tie-break; `score` float32[N] is the fraction of
    prompts whose response was labelled unsafe; `prompt_labels` int8[N, P] holds each prompt's label
    (0/1/2) and `responses` the raw texts, N tuples of P strings; `tie_broken` bool[N] marks
    decisions settled by the coin.
    """

    sample_ids: tuple[str, ...]
    pred: np.ndarray
    score: np.ndarray
    prompt_labels: np.ndarray
    responses: tuple[tuple[str, ...], ...]
    tie_broken: np.ndarray
    converter: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def n_prompts(self) -> int:
        return int(self.prompt_labels.shape[1])

    def to_frame(self) -> pd.DataFrame:
        """One row per image: sample_id, pred, score, tie_broken, label_p<i>, response_p<i>."""
        import pandas as pd

        data: dict[str, object] = {
            "sample_id": list(self.sample_ids),
            "pred": self.pred.astype(np.int8),
            "score": self.score.astype(np.float32),
            "tie_broken": self.tie_broken.astype(bool),
        }
        for p in range(self.n_prompts):
            data[f"label_p{p}"] = self.prompt_labels[:, p].astype(np.int8)
        for p in range(self.n_prompts):
            data[f"response_p{p}"] = [r[p] for r in self.responses]
        return pd.DataFrame(data)

    def predictions(self, plan: pd.DataFrame, classifier: str) -> pd.DataFrame:
        """Rows of `results/predictions.parquet` for these images.

        `plan` is the run's plan (or a shard of it) with sample_id, category, source and label;
        every decided sample id must be in it.
        """
        import pandas as pd

        rows = plan.set_index("sample_id")
        missing = [s for s in self.sample_ids if s not in rows.index]
        if missing:
            raise KeyError(
                f"{len(missing)} decided sample ids are not in the plan (first: {missing[:3]}); "
                "decide on the plan's own sample ids"
            )
        picked = rows.loc[list(self.sample_ids)]
        return pd.DataFrame(
            {
                "sample_id": list(self.sample_ids),
                "classifier": classifier,
                "category": picked["category"].to_numpy(),
                "source": picked["source"].to_numpy(),
                "label": picked["label"].to_numpy(),
                "pred": self.pred.astype(np.int8),
                "score": self.score.astype(np.float32),
            }
        )


def vote(
    prompt_labels: np.ndarray,
    sample_ids: Sequence[str],
    responses: Sequence[Sequence[str]],
    *,
    seed: int,
    converter: str = "",
) -> VLMDecision:
    """Majority vote over prompts (int8[N, P] labels 0/1/2); unsure settled by `tie_break`."""
    labels = np.asarray(prompt_labels, dtype=np.int8)
    if labels.ndim != 2 or labels.shape[0] != len(sample_ids):
        raise ValueError(
            f"prompt labels of shape {labels.shape} do not match {len(sample_ids)} sample ids"
        )
    bad = ~np.isin(labels, (SAFE, UNSAFE, UNSURE))
    if bad.any():
        raise ValueError(f"prompt labels must be 0/1/2, found {sorted(set(labels[bad].tolist()))}")
    n = labels.shape[0]
    pred = np.empty(n, dtype=np.int8)
    tie_broken = np.zeros(n, dtype=bool)
    for i in range(n):
        winner = majority(labels[i].tolist())
        if winner == UNSURE:
            winner = tie_break(seed, sample_ids[i])
            tie_broken[i] = True
        pred[i] = winner
    score = (labels == UNSAFE).mean(axis=1).astype(np.float32)
    return VLMDecision(
        sample_ids=tuple(sample_ids),
        pred=pred,
        score=score,
        prompt_labels=labels,
        responses=tuple(tuple(r) for r in responses),
        tie_broken=tie_broken,
        converter=converter,
    )
