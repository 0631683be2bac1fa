"""What `ubsafe data check` prints and decodes."""

from __future__ import annotations

import pandas as pd

from ubsafe.data.dataset import Dataset
from ubsafe.data.images import DecodeError, decode_image
from ubsafe.taxonomy import NO_LABEL


def summary(table: pd.DataFrame) -> str:
    """Counts by category × source × label (safe/unsafe/unlabelled), with totals."""
    names = {0: "safe", 1: "unsafe", NO_LABEL: "unlabelled"}
    labelled = table.assign(label=table["label"].map(names))
    counts = pd.crosstab(
        labelled["category"],
        [labelled["source"], labelled["label"]],
        margins=True,
        margins_name="total",
    )
    splits = table["split"].value_counts().to_dict()
    split_text = ", ".join(f"{k} {v}" for k, v in sorted(splits.items()))
    return f"{counts.to_string()}\nsplits: {split_text}"


def decode_failures(dataset: Dataset) -> list[tuple[str, str]]:
    """Every sample whose image does not decode, with the reason."""
    from ubsafe.progress import progress

    failures = []
    table = dataset.table
    for sample_id, data, reason in progress(
        dataset.iter_images(table), desc="decoding", total=len(table), unit="img"
    ):
        if data is None:
            failures.append((sample_id, reason))
            continue
        try:
            decode_image(data)
        except DecodeError as exc:
            failures.append((sample_id, str(exc)))
    return failures
