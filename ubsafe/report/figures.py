"""The report's figures (matplotlib, Agg), each a pure function of results frames → PNG bytes.

Figures are drawn on `matplotlib.figure.Figure` with an Agg canvas, never through pyplot, so no
global backend state is touched and nothing opens a window. PNGs carry no software/date metadata:
the same results give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ubsafe.report.format import severity_label
from ubsafe.report.tables import ORDERS, rank_key
from ubsafe.taxonomy import CATEGORIES, OVERALL

#: Okabe–Ito colours (readable with colour-vision deficiencies): real, AI-generated, then others.
REAL, AI = "#0072B2", "#E69F00"
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
SOURCE_STYLE: dict[str, dict[str, Any]] = {
    "real": {"color": REAL, "linestyle": "-", "marker": "o", "label": "real"},
    "ai": {"color": AI, "linestyle": "--", "marker": "s", "label": "AI-generated"},
}
DPI = 100
#: Points drawn per projection panel (a deterministic thinning beyond this).
MAX_POINTS = 1500


@dataclass(frozen=True)
class Png:
    data: bytes
    width: int
    height: int


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Any) -> Png:
    """Render `fig` to PNG bytes without metadata that would change from run to run."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    width, height = (round(v) for v in fig.get_size_inches() * DPI)
    return Png(buffer.getvalue(), width, height)


def _grid(fig: Any, n: int, ncols: int, **kwargs: Any) -> list[Any]:
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


#: Inches: one category row; above a panel (title); below it (ticks, label); left of it (names).
ROW_INCHES, TITLE_INCHES, AXIS_INCHES, NAMES_INCHES = 0.32, 0.4, 0.55, 1.75
PANEL_WIDTH, LEGEND_INCHES = 4.6, 0.45


def _panel_figure(counts: Sequence[int], ncols: int) -> Any:
    """A figure for panels of `counts` category rows, `ncols` to a row of panels (laid out by
    `_panels_by_rows`, so without a layout engine)."""
    tallest = [max(counts[i : i + ncols]) for i in range(0, len(counts), ncols)]
    height = sum(_pitch(t) for t in tallest) + LEGEND_INCHES
    fig = _figure(PANEL_WIDTH * ncols, height)
    fig.set_layout_engine("none")
    return fig


def _pitch(rows: int) -> float:
    return TITLE_INCHES + ROW_INCHES * (rows + 0.6) + AXIS_INCHES


def _panels_by_rows(fig: Any, counts: Sequence[int], ncols: int) -> list[Any]:
    """One axes per panel, each as tall as its own category rows (a 2-row panel is not stretched
    to its 12-row neighbour), top-aligned within its row of panels."""
    width, height = fig.get_size_inches()
    tallest = [max(counts[i : i + ncols]) for i in range(0, len(counts), ncols)]
    axes = []
    for i, count in enumerate(counts):
        row, col = divmod(i, ncols)
        top = height - sum(_pitch(t) for t in tallest[:row]) - TITLE_INCHES
        tall = ROW_INCHES * (count + 0.6)
        left = PANEL_WIDTH * col + NAMES_INCHES
        box = (left / width, (top - tall) / height, (PANEL_WIDTH - NAMES_INCHES - 0.15) / width)
        axes.append(fig.add_axes((box[0], box[1], box[2], tall / height)))
    return axes


def _ordered(values: Sequence[Any], name: str) -> list[Any]:
    ranks = rank_key(name)(pd.Index(list(values)))
    return [v for _, v in sorted(zip(ranks, values, strict=True), key=lambda t: t[0])]


def _errorbars(
    ax: Any, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray, **style: Any
) -> None:
    """Points with interval bars; a missing interval draws the point alone."""
    err = np.vstack([np.clip(x - lo, 0, None), np.clip(hi - x, 0, None)])
    err = np.where(np.isfinite(err), err, 0.0)
    ax.errorbar(
        x, y, xerr=err, fmt=style.pop("marker", "o"), capsize=2, markersize=4, linewidth=1, **style
    )


# --- effectiveness --------------------------------------------------------------------------


def effectiveness(
    frame: pd.DataFrame, classifiers: Sequence[str], metric: str = "f1"
) -> Png | None:
    """Per classifier, the metric by category on real vs AI-generated images, with intervals."""
    data = frame[frame["source"].isin(["real", "ai"])]
    names = [c for c in classifiers if c in set(data["classifier"])]
    if not names:
        return None
    counts = [len(set(data[data.classifier == c].category)) for c in names]
    ncols = min(3, len(names))
    fig = _panel_figure(counts, ncols)
    for ax, name in zip(_panels_by_rows(fig, counts, ncols), names, strict=True):
        rows = data[data["classifier"] == name]
        cats = _ordered(sorted(set(rows["category"])), "category")
        position = {c: i for i, c in enumerate(reversed(cats))}
        for offset, source in ((0.17, "real"), (-0.17, "ai")):
            part = rows[rows["source"] == source]
            y = np.array([position[c] + offset for c in part["category"]])
            style = {k: v for k, v in SOURCE_STYLE[source].items() if k != "linestyle"}
            _errorbars(
                ax,
                part[metric].to_numpy(float),
                y,
                part[f"{metric}_lo"].to_numpy(float),
                part[f"{metric}_hi"].to_numpy(float),
                **style,
            )
        ax.set_yticks(range(len(cats)), list(reversed(cats)), fontsize=8)
        ax.set_ylim(-0.6, len(cats) - 0.4)
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(metric.upper() if metric == "f1" else metric, fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=2, fontsize=8)
    return to_png(fig)


def gaps(frame: pd.DataFrame, classifiers: Sequence[str], metric: str = "f1") -> Png | None:
    """Forest plot of real − AI differences with intervals; filled markers where p < 0.05."""
    data = frame[frame["metric"] == metric]
    rows: list[tuple[str, pd.Series]] = []
    for name in classifiers:
        part = data[data["classifier"] == name]
        for category in _ordered(sorted(set(part["category"])), "category"):
            rows.append((f"{name} · {category}", part[part["category"] == category].iloc[0]))
    if not rows:
        return None
    fig = _figure(7.5, 0.24 * len(rows) + 1.3)
    ax = fig.subplots()
    for i, (_, row) in enumerate(reversed(rows)):
        significant = float(row["p_value"]) < 0.05 if pd.notna(row["p_value"]) else False
        colour = REAL if float(row["diff"]) >= 0 else AI
        _errorbars(
            ax,
            np.array([row["diff"]], float),
            np.array([i]),
            np.array([row["diff_lo"]], float),
            np.array([row["diff_hi"]], float),
            color=colour,
            markerfacecolor=colour if significant else "white",
        )
    ax.axvline(0, color="#555", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)], fontsize=7)
    ax.set_xlabel(f"{metric.upper()} real − AI-generated (filled: p < 0.05)", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def precision_recall(frame: pd.DataFrame, classifiers: Sequence[str]) -> Png | None:
    """Precision vs recall per (classifier, category) on real and AI images, with F1 contours."""
    data = frame[frame["source"].isin(["real", "ai"]) & (frame["category"] != OVERALL)]
    names = [c for c in classifiers if c in set(data["classifier"])]
    if not names:
        return None
    ncols = min(3, len(names))
    fig = _figure(3.6 * ncols, 3.3 * -(-len(names) // ncols))
    grid = np.linspace(0.01, 1, 200)
    for ax, name in zip(
        _grid(fig, len(names), ncols, sharex=True, sharey=True), names, strict=True
    ):
        for level in (0.2, 0.4, 0.6, 0.8):
            recall = level * grid / (2 * grid - level)  # F1 = 2PR / (P + R) solved for R
            keep = (recall > 0) & (recall <= 1) & (2 * grid > level)
            ax.plot(grid[keep], recall[keep], color="#bbb", linewidth=0.7)
        rows = data[data["classifier"] == name]
        for source in ("real", "ai"):
            part = rows[rows["source"] == source]
            style = SOURCE_STYLE[source]
            ax.scatter(
                part["precision"],
                part["recall"],
                s=18,
                color=style["color"],
                marker=style["marker"],
                label=style["label"],
            )
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelbottom=True, labelleft=True)  # every panel keeps its numbers
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("precision", fontsize=8)
        ax.set_ylabel("recall", fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8)
    return to_png(fig)


# --- robustness -----------------------------------------------------------------------------


def _family_lines(ax: Any, rows: pd.DataFrame, value: str, group: str) -> list[Any]:
    handles = []
    groups = _ordered(sorted(set(rows[group]), key=str), group)
    for colour, name in zip(PALETTE * 4, groups, strict=False):
        for source in ("real", "ai"):
            part = rows[(rows[group] == name) & (rows["source"] == source)].sort_values("severity")
            if part.empty:
                continue
            (line,) = ax.plot(
                part["severity"],
                part[value],
                color=colour,
                linestyle=SOURCE_STYLE[source]["linestyle"],
                marker=".",
                linewidth=1.1,
                label=f"{name}" if source == "real" else None,
            )
            if source == "real":
                handles.append(line)
    return handles


def _mean_over_seeds(frame: pd.DataFrame, keys: Sequence[str], value: str) -> pd.DataFrame:
    return frame.groupby(list(keys), sort=False)[value].mean().reset_index()


def robustness_by_severity(frame: pd.DataFrame, classifiers: Sequence[str]) -> Png | None:
    """Robust accuracy vs corruption severity per classifier: one line per family (the mean of its
    corruptions), solid on real and dashed on AI-generated images."""
    data = frame[frame["family"] != "attack"]
    names = [c for c in classifiers if c in set(data["classifier"])]
    if not names:
        return None
    data = _mean_over_seeds(data, ["classifier", "family", "source", "severity"], "robust_accuracy")
    ncols = min(3, len(names))
    fig = _figure(3.6 * ncols, 3.0 * -(-len(names) // ncols))
    for ax, name in zip(_grid(fig, len(names), ncols, sharey=True), names, strict=True):
        handles = _family_lines(ax, data[data["classifier"] == name], "robust_accuracy", "family")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("robust accuracy", fontsize=8)
        ax.set_xlabel("severity (solid real, dashed AI)", fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=6, loc="lower left")
    return to_png(fig)


def robustness_by_budget(frame: pd.DataFrame, classifiers: Sequence[str]) -> Png | None:
    """Robust accuracy vs attack budget, per classifier; lines per attack."""
    data = frame[frame["family"] == "attack"]
    names = [c for c in classifiers if c in set(data["classifier"])]
    if not names:
        return None
    data = _mean_over_seeds(
        data, ["classifier", "perturbation", "source", "severity"], "robust_accuracy"
    )
    budgets = sorted(set(data["severity"]), key=float)
    position = {b: i for i, b in enumerate(budgets)}
    data = data.assign(severity=[position[b] for b in data["severity"]])
    ncols = min(3, len(names))
    fig = _figure(3.6 * ncols, 3.0 * -(-len(names) // ncols))
    for ax, name in zip(_grid(fig, len(names), ncols, sharey=True), names, strict=True):
        handles = _family_lines(
            ax, data[data["classifier"] == name], "robust_accuracy", "perturbation"
        )
        ax.set_xticks(
            range(len(budgets)), [severity_label("attack", b) for b in budgets], fontsize=7
        )
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("robust accuracy", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=6, loc="lower left")
    return to_png(fig)


def drift(frame: pd.DataFrame, classifiers: Sequence[str]) -> Png | None:
    """Mean cosine between clean and corrupted embeddings vs severity, averaged per family."""
    data = frame[(frame["family"] != "attack") & frame["mean_cosine"].notna()]
    names = [c for c in classifiers if c in set(data["classifier"])]
    if not names:
        return None
    data = _mean_over_seeds(data, ["classifier", "family", "source", "severity"], "mean_cosine")
    ncols = min(3, len(names))
    fig = _figure(3.6 * ncols, 3.0 * -(-len(names) // ncols))
    for ax, name in zip(_grid(fig, len(names), ncols, sharey=True), names, strict=True):
        handles = _family_lines(ax, data[data["classifier"] == name], "mean_cosine", "family")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("mean cosine, clean vs perturbed", fontsize=8)
        ax.set_xlabel("severity (solid real, dashed AI)", fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=6, loc="lower left")
    return to_png(fig)


# --- distribution shift ---------------------------------------------------------------------


def shift(frames: Sequence[tuple[str, pd.DataFrame]]) -> Png | None:
    """Fréchet distance and MMD² per category with intervals; one marker colour per run."""
    frames = [(label, f) for label, f in frames if not f.empty]
    if not frames:
        return None
    cats = _ordered(sorted(set().union(*(set(f["category"]) for _, f in frames))), "category")
    fig = _figure(9.5, 0.3 * len(cats) + 1.4)
    axes = fig.subplots(1, 2, sharey=True)
    position = {c: i for i, c in enumerate(reversed(cats))}
    width = 0.6 / max(1, len(frames))
    for k, (label, frame) in enumerate(frames):
        for ax, metric in zip(axes, ("frechet", "mmd"), strict=True):
            part = frame[frame["metric"] == metric]
            y = (
                np.array([position[c] for c in part["category"]], float)
                + (k - (len(frames) - 1) / 2) * width
            )
            _errorbars(
                ax,
                part["value"].to_numpy(float),
                y,
                part["lo"].to_numpy(float),
                part["hi"].to_numpy(float),
                color=PALETTE[k % len(PALETTE)],
                label=label,
            )
    axes[0].set_yticks(range(len(cats)), list(reversed(cats)), fontsize=8)
    axes[0].set_xlabel("Fréchet distance (unit-norm embeddings)", fontsize=8)
    axes[1].set_xlabel("MMD² (unbiased, Gaussian kernel)", fontsize=8)
    axes[1].axvline(0, color="#555", linewidth=0.8)
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    if len(frames) > 1:
        axes[1].legend(fontsize=7, loc="lower right")
    return to_png(fig)


def _thin(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    if len(frame) <= limit:
        return frame
    step = int(np.ceil(len(frame) / limit))
    return frame.iloc[::step]


def projection(frame: pd.DataFrame) -> Png | None:
    """The 2-D projection of the embeddings, one panel per category, coloured by source."""
    if frame.empty:
        return None
    cats = [c for c in ORDERS["category"] if c in set(frame["category"]) and c != OVERALL]
    cats += sorted(set(frame["category"]) - set(CATEGORIES))
    panels = [(OVERALL, frame), *((c, frame[frame["category"] == c]) for c in cats)]
    ncols = 4
    fig = _figure(3.0 * ncols, 2.8 * -(-len(panels) // ncols))
    # Each panel scaled to its own points: the question is real vs AI within a category.
    axes = _grid(fig, len(panels), ncols)
    for ax, (name, rows) in zip(axes, panels, strict=True):
        rows = _thin(rows.sort_values("sample_id", kind="stable"), MAX_POINTS)
        total = len(frame) if name == OVERALL else int((frame["category"] == name).sum())
        for source in ("real", "ai"):
            part = rows[rows["source"] == source]
            ax.scatter(
                part["x"],
                part["y"],
                s=7,
                alpha=0.55,
                color=SOURCE_STYLE[source]["color"],
                label=SOURCE_STYLE[source]["label"],
                linewidths=0,
            )
        ax.set_title(f"{name} ({total} images)", fontsize=9)
        ax.set_xticks([])  # principal-component units mean nothing to a reader
        ax.set_yticks([])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, markerscale=2.5)
    return to_png(fig)
