"""The paper's headline metric for PerspectiveVision, over ubsafe runs: F1 on each evaluation
dataset and pooled over all their images ("overall", 0.810 claimed on six datasets).

Each dataset is one run (UnsafeBench's test split in one, each external set in its own); this reads
every run's `results/` alone (`predictions.parquet`, and `summary.json` for the dataset's name: the
run's dataset folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

OVERALL = "overall"
COLUMNS: tuple[str, ...] = ("classifier", "dataset", "n", "n_unsafe", "tp", "fp", "fn", "tn")
COLUMNS += ("precision", "recall", "f1")


def dataset_name(run_dir: Path) -> str:
    """The name of the dataset a reduced run evaluated: its folder's name, from
    `results/summary.json` (else `run.toml`, else the run folder's own name)."""
    summary = run_dir / "results" / "summary.json"
    dataset = None
    if summary.is_file():
        dataset = json.loads(summary.read_text()).get("dataset")
    elif (run_dir / "run.toml").is_file():
        from ubsafe.config import load_run_config

        dataset = load_run_config(run_dir / "run.toml").dataset
    return Path(str(dataset)).name if dataset else run_dir.name


def _row(classifier: str, dataset: str, labels: object, preds: object) -> dict[str, object]:
    import numpy as np

    from ubsafe.kernels import binary_metrics

    y = np.asarray(labels).astype(bool)
    p = np.asarray(preds).astype(bool)
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    fn, tn = int((y & ~p).sum()), int((~y & ~p).sum())
    metrics = binary_metrics(y, p)
    return {
        "classifier": classifier,
        "dataset": dataset,
        "n": len(y),
        "n_unsafe": int(y.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "f1": metrics["f1"],
    }


def pooled_over_runs(
    runs: Sequence[str | os.PathLike[str]], *, classifiers: Sequence[str] | None = None
) -> pd.DataFrame:
    """F1 (and the cells behind it) per classifier on each run's dataset, plus `overall`: pooled
    over every image of every run. Undefined precision, recall or F1 is 0 (scikit-learn's
    zero_division=0).

    `classifiers` defaults to those with predictions in every run; a named one missing from a run
    raises, naming the run — a pooled F1 over fewer datasets would not be the same number.
    """
    import pandas as pd

    if not runs:
        raise ValueError("no runs given; pass one reduced run per evaluation dataset")
    tables: dict[str, pd.DataFrame] = {}
    for run in runs:
        run_dir = Path(run)
        path = run_dir / "results" / "predictions.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; reduce the run first (`ubsafe reduce`)")
        name = dataset_name(run_dir)
        if name in tables:
            raise ValueError(
                f"two runs evaluate the dataset {name!r}; pooling would count its images twice"
            )
        tables[name] = pd.read_parquet(path, columns=["classifier", "label", "pred"])
    present = [set(t["classifier"]) for t in tables.values()]
    if classifiers is None:
        chosen = sorted(set.intersection(*present))
        if not chosen:
            raise ValueError(
                f"no classifier has predictions in all {len(tables)} runs "
                f"({', '.join(tables)}); name the classifiers to pool"
            )
    else:
        chosen = list(classifiers)
        for dataset, have in zip(tables, present, strict=True):
            missing = [c for c in chosen if c not in have]
            if missing:
                raise ValueError(
                    f"the run on {dataset!r} has no predictions of {missing}; score them there "
                    "or leave them out"
                )
    rows = []
    for classifier in chosen:
        labels, preds = [], []
        for dataset, table in tables.items():
            mine = table[table["classifier"] == classifier]
            rows.append(_row(classifier, dataset, mine["label"], mine["pred"]))
            labels.append(mine["label"].to_numpy())
            preds.append(mine["pred"].to_numpy())
        rows.append(_row(classifier, OVERALL, _concat(labels), _concat(preds)))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _concat(parts: list[object]) -> object:
    import numpy as np

    return np.concatenate([np.asarray(p) for p in parts])
