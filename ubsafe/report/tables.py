"""Long records → the report's wide tables: keys down the side, (…, run) across, in domain order.

Every table is built the same way: each run contributes records (key columns, column keys, one
display string); `wide_table` pivots them so that several runs sit side by side under each column,
labelled by run name, and sorts both axes in the order a reader expects (the taxonomy's categories,
real before AI, severities ascending).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from ubsafe.report.format import ABSENT
from ubsafe.taxonomy import CATEGORIES, OVERALL

#: value orders per key name; values not listed sort after these, alphabetically.
ORDERS: dict[str, tuple[Any, ...]] = {
    "category": (*CATEGORIES, OVERALL),
    "source": ("real", "ai", "all"),
    "family": ("noise", "blur", "weather", "digital", "extra", "attack"),
    "metric": ("f1", "precision", "recall", "accuracy", "frechet", "mmd"),
}

RUN = "run"


def rank_key(
    name: str | None, order: Sequence[Any] | None = None
) -> Callable[[pd.Index], pd.Index]:
    """A sort key: listed values first in list order, then numbers numerically, then text."""
    listed = list(order if order is not None else ORDERS.get(name or "", ()))

    def key(index: pd.Index) -> pd.Index:
        def rank(value: Any) -> tuple[int, float, str]:
            if value in listed:
                return (0, float(listed.index(value)), "")
            if isinstance(value, int | float):
                return (1, float(value), "")
            return (2, 0.0, str(value))

        return pd.Index([rank(v) for v in index], name=index.name, tupleize_cols=False)

    return key


def _sort_axis(frame: pd.DataFrame, axis: int, orders: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    labels = frame.index if axis == 0 else frame.columns
    # Sort by the tuple of per-level ranks (a stable sort: ties keep their order).
    names = [str(name) if name is not None else "" for name in labels.names]
    keys = [rank_key(name, orders.get(name)) for name in names]
    ranked = [keys[i](labels.get_level_values(i)) for i in range(labels.nlevels)]
    position = sorted(range(len(labels)), key=lambda j: tuple(r[j] for r in ranked))
    return frame.iloc[position] if axis == 0 else frame.iloc[:, position]


def wide_table(
    records: pd.DataFrame,
    index: Sequence[str],
    columns: Sequence[str],
    runs: Sequence[str],
    *,
    orders: Mapping[str, Sequence[Any]] | None = None,
    labels: Mapping[str, Callable[[Any], str]] | None = None,
    index_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Pivot records (`index` + `columns` + `run` + `cell`) into a frame of display strings.

    Columns are (*columns, run) with the run level dropped when there is one run; a missing cell
    reads `ABSENT`. `orders` adds or overrides value orders per key; `labels` maps raw key values to
    display text per key (after sorting); `index_names` renames the key columns.
    """
    order = {**ORDERS, **(orders or {})}
    col_keys = [*columns, RUN] if len(runs) > 1 else list(columns)
    if records.empty:
        return pd.DataFrame()
    data = records if len(runs) > 1 else records.drop(columns=[RUN])
    frame = data.set_index([*index, *col_keys])["cell"]
    if frame.index.has_duplicates:
        dupes = frame.index[frame.index.duplicated()].unique()[:3].tolist()
        raise ValueError(f"duplicate table cells for {dupes}: each key may appear once per run")
    wide = frame.unstack(col_keys) if col_keys else frame.to_frame(name="")
    if isinstance(wide, pd.Series):
        wide = wide.to_frame()
    wide = wide.dropna(axis=1, how="all")
    run_order = {RUN: tuple(runs)}
    wide = _sort_axis(wide, 0, order)
    wide = _sort_axis(wide, 1, {**order, **run_order})
    wide = wide.fillna(ABSENT)
    for name, to_text in (labels or {}).items():
        for axis_labels, axis in ((wide.index, 0), (wide.columns, 1)):
            if name in (axis_labels.names or []):
                wide = _relabel(wide, axis, name, to_text)
    if index_names:
        names = [str(n) for n in wide.index.names]
        wide.index = wide.index.set_names([index_names.get(n, n) for n in names])
    return wide


def _relabel(
    frame: pd.DataFrame, axis: int, level: str, to_text: Callable[[Any], str]
) -> pd.DataFrame:
    labels = frame.index if axis == 0 else frame.columns
    if labels.nlevels == 1:
        new = pd.Index([to_text(v) for v in labels], name=labels.name)
    else:
        i = labels.names.index(level)
        tuples = [tuple(to_text(v) if j == i else v for j, v in enumerate(t)) for t in labels]
        new = pd.MultiIndex.from_tuples(tuples, names=labels.names)
    out = frame.copy()
    if axis == 0:
        out.index = new
    else:
        out.columns = new
    return out


def classifier_order(
    frames: Sequence[pd.DataFrame | None], summaries: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Classifiers in the runs' configured order, then any others seen in results, sorted."""
    seen: list[str] = []
    for summary in summaries:
        for name in summary.get("classifiers", []) or []:
            if name not in seen:
                seen.append(str(name))
    extra: set[str] = set()
    for frame in frames:
        if frame is None:
            continue
        for column in ("classifier", "classifier_a", "classifier_b"):
            if column in frame.columns:
                extra.update(str(v) for v in frame[column].dropna().unique())
    return seen + sorted(extra - set(seen))
