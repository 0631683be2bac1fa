"""The report's "Mitigations" section: text-to-image generators with and without mitigations.

Tables in the SLD paper's layout (category × generator: the probability of inappropriate content,
with its cluster-bootstrap interval), I2P's expected maximum inappropriateness, SafeGen's nudity
removal against the baseline, generators compared on the same images (paired difference, McNemar
marks), benign fidelity (CLIP score) and the judges' agreement; a figure of the unsafe rate by
category per generator. Runs sit side by side as in the classifier tables. Generated images appear
only with `--thumbnails blur`, and then only heavily blurred (`ubsafe.report.thumbnails`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ubsafe.report import format as fmt
from ubsafe.report.context import Context, records
from ubsafe.report.document import Heading, Section, Table, Text, prose
from ubsafe.report.tables import RUN, wide_table
from ubsafe.taxonomy import OVERALL

TOTAL = "total"
ALL_GENERATORS = "all"


def generators(ctx: Context) -> list[str]:
    """Generators in the order of the runs' mitigation.csv (the run's order), first run first."""
    seen: list[str] = []
    for name in ("mitigation", "nudity", "fidelity"):
        for _, frame in ctx.with_table(name):
            for g in frame["generator"].astype(str):
                if g not in seen:
                    seen.append(g)
    return seen


def judges(ctx: Context) -> list[str]:
    seen: list[str] = []
    for _, frame in ctx.with_table("mitigation"):
        for j in frame["judge"].astype(str):
            if j not in seen:
                seen.append(j)
    return seen


def _orders(ctx: Context) -> dict[str, Sequence[Any]]:
    gens = generators(ctx)
    return {"generator": gens}


def _category_by_generator(ctx: Context, judge: str, cell: Callable[[Any], str]) -> pd.DataFrame:
    """Category × generator of one judge's rows of `mitigation.csv`, each cell made by `cell`."""
    rows: list[dict[str, Any]] = []
    for run, frame in ctx.with_table("mitigation"):
        for row in frame[frame["judge"] == judge].itertuples(index=False):
            rows.append(
                {
                    "category": row.category,
                    "generator": row.generator,
                    RUN: run.label,
                    "cell": cell(row),
                }
            )
    return wide_table(records(rows), ["category"], ["generator"], ctx.labels, orders=_orders(ctx))


def rate_cell(row: Any) -> str:
    return fmt.with_interval(row.unsafe_rate, row.lo, row.hi, digits=2)


def rate_table(ctx: Context, judge: str) -> pd.DataFrame:
    """Category × generator: the share of images judged unsafe, with its interval."""
    return _category_by_generator(ctx, judge, rate_cell)


def _percent(value: Any) -> str:
    return fmt.UNDEFINED if fmt.is_missing(value) else f"{100 * float(value):.1f}"


def expected_max_cell(row: Any) -> str:
    """`97.1 ± 6.2` (percent, I2P's mean ± sd of the maxima), its interval below."""
    head = f"{_percent(row.expected_max)} ± {_percent(row.expected_max_sd)}"
    if fmt.is_missing(row.expected_max_lo) or fmt.is_missing(row.expected_max):
        return head
    return f"{head}\n[{_percent(row.expected_max_lo)}, {_percent(row.expected_max_hi)}]"


def expected_max_table(ctx: Context, judge: str) -> pd.DataFrame:
    """Category × generator: I2P's expected maximum inappropriateness, with its interval."""
    return _category_by_generator(ctx, judge, expected_max_cell)


NUDITY_FIELDS = ("images", "with exposed part", "detections", "removal")


def _generator_by_field(
    ctx: Context, cells: Iterable[tuple[str, Any, dict[str, str]]], fields: Sequence[str]
) -> pd.DataFrame:
    """Generator × field from (run label, generator, {field: cell}) triples, fields in order."""
    rows = [
        {"generator": generator, "field": field, RUN: label, "cell": cell}
        for label, generator, by_field in cells
        for field, cell in by_field.items()
    ]
    return wide_table(
        records(rows),
        ["generator"],
        ["field"],
        ctx.labels,
        orders={**_orders(ctx), "field": tuple(fields)},
    )


def nudity_summary(ctx: Context, category: str = OVERALL) -> pd.DataFrame:
    """Generator × field for every selected class together."""
    return _generator_by_field(ctx, _nudity_cells(ctx, category), NUDITY_FIELDS)


def _nudity_cells(ctx: Context, category: str) -> Iterator[tuple[str, Any, dict[str, str]]]:
    for run, frame in ctx.with_table("nudity"):
        part = frame[(frame["class"] == TOTAL) & (frame["category"] == category)]
        for row in part.itertuples(index=False):
            cells = {
                "images": fmt.integer(row.n_images),
                "with exposed part": fmt.with_interval(
                    row.image_share, row.image_share_lo, row.image_share_hi
                ),
                "detections": fmt.integer(row.detections),
                "removal": fmt.with_interval(row.removal, row.removal_lo, row.removal_hi)
                if not fmt.is_missing(row.removal)
                else ("baseline" if str(row.generator) == str(row.baseline) else fmt.UNDEFINED),
            }
            yield run.label, row.generator, cells


def removal_table(ctx: Context, category: str = OVERALL) -> pd.DataFrame:
    """Class × generator: detections and their relative reduction against the baseline."""
    rows: list[dict[str, Any]] = []
    for run, frame in ctx.with_table("nudity"):
        part = frame[frame["category"] == category]
        for row in part.itertuples(index=False):
            if str(row.generator) == str(row.baseline):
                cell = f"{fmt.integer(row.detections)} detections (baseline)"
            else:
                removal = fmt.with_interval(row.removal, row.removal_lo, row.removal_hi)
                cell = f"{fmt.integer(row.detections)} detections, removal {removal}"
            rows.append({"class": row[3], "generator": row.generator, RUN: run.label, "cell": cell})
    classes = [c for _, f in ctx.with_table("nudity") for c in f["class"] if c != TOTAL]
    return wide_table(
        records(rows),
        ["class"],
        ["generator"],
        ctx.labels,
        orders={**_orders(ctx), "class": (*dict.fromkeys(classes), TOTAL)},
    )


def pair_cell(row: Any) -> str:
    mark = fmt.mark(row.mcnemar_p)
    head = fmt.signed(row.diff) + (f" {mark}" if mark else "")
    tail = fmt.interval(row.diff_lo, row.diff_hi, sign=True)
    return f"{head}\n{tail}" if tail else head


def pairs_table(ctx: Context, judge: str) -> pd.DataFrame:
    """Generator pair × category: unsafe rate of a − b on the same images, McNemar marks."""
    rows: list[dict[str, Any]] = []
    for run, frame in ctx.with_table("mitigation_pairs"):
        for row in frame[frame["judge"] == judge].itertuples(index=False):
            rows.append(
                {
                    "pair": f"{row.generator_a} − {row.generator_b}",
                    "category": row.category,
                    RUN: run.label,
                    "cell": pair_cell(row),
                }
            )
    gens = generators(ctx)
    pairs = [f"{a} − {b}" for i, a in enumerate(gens) for b in gens[i + 1 :]]
    return wide_table(records(rows), ["pair"], ["category"], ctx.labels, orders={"pair": pairs})


FIDELITY_FIELDS = ("images", "CLIP score", "Δ vs baseline", "FID", "KID")


def _number(value: Any, digits: int) -> str:
    return fmt.UNDEFINED if fmt.is_missing(value) else f"{float(value):.{digits}f}"


def fidelity_table(ctx: Context) -> pd.DataFrame:
    return _generator_by_field(ctx, _fidelity_cells(ctx), FIDELITY_FIELDS)


def _fidelity_cells(ctx: Context) -> Iterator[tuple[str, Any, dict[str, str]]]:
    for run, frame in ctx.with_table("fidelity"):
        for row in frame.itertuples(index=False):
            cells = {
                "images": fmt.integer(row.n_images),
                "CLIP score": fmt.with_interval(row.clip_score, row.clip_lo, row.clip_hi, 2),
                "Δ vs baseline": fmt.with_interval(
                    row.clip_diff, row.clip_diff_lo, row.clip_diff_hi, 2, sign=True
                )
                if str(row.generator) != str(row.baseline)
                else "baseline",
                "FID": _number(row.fid, 2),
                "KID": _number(row.kid, 4),
            }
            yield run.label, row.generator, cells


def agreement_table(ctx: Context) -> pd.DataFrame:
    """Judge pair × generator: Cohen's κ with its interval (and the observed agreement)."""
    rows: list[dict[str, Any]] = []
    for run, frame in ctx.with_table("judge_agreement"):
        for row in frame.itertuples(index=False):
            kappa = fmt.with_interval(row.kappa, row.kappa_lo, row.kappa_hi, 2)
            rows.append(
                {
                    "judges": f"{row.judge_a} / {row.judge_b}",
                    "generator": row.generator,
                    RUN: run.label,
                    "cell": kappa,
                }
            )
    pairs = [r["judges"] for r in rows]
    return wide_table(
        records(rows),
        ["judges"],
        ["generator"],
        ctx.labels,
        orders={
            "generator": (*generators(ctx), ALL_GENERATORS),
            "judges": tuple(dict.fromkeys(pairs)),
        },
    )


def rate_figure(frame: pd.DataFrame, judge: str, order: Sequence[str]) -> Any:
    """Unsafe rate by category (rows), one marker colour per generator, with intervals."""
    from ubsafe.report.figures import PALETTE, _errorbars, _figure, _ordered, to_png

    data = frame[frame["judge"] == judge]
    if data.empty:
        return None
    cats = _ordered(sorted(set(data["category"])), "category")
    gens = [g for g in order if g in set(data["generator"])]
    position = {c: i for i, c in enumerate(reversed(cats))}
    fig = _figure(6.4, 0.45 * len(cats) * max(1.0, len(gens) / 3) + 1.4)
    ax = fig.subplots()
    width = 0.7 / max(1, len(gens))
    for i, name in enumerate(gens):
        part = data[data["generator"] == name]
        offset = (len(gens) - 1) / 2 * width - i * width
        y = np.array([position[c] + offset for c in part["category"]])
        _errorbars(
            ax,
            part["unsafe_rate"].to_numpy(float),
            y,
            part["lo"].to_numpy(float),
            part["hi"].to_numpy(float),
            color=PALETTE[i % len(PALETTE)],
            label=name,
        )
    ax.set_yticks(range(len(cats)), list(reversed(cats)), fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"share of images judged unsafe ({judge})", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    return to_png(fig)


def mitigation_section(ctx: Context) -> Section | None:
    """The section, or None when no run has mitigation results."""
    if not any(True for _ in ctx.with_table("mitigation")):
        return None
    section = Section("mitigations", "Mitigations")
    level = ctx.level_text()
    section.add(
        prose(f"""
        Text-to-image generators with and without mitigations, judged on the images they made.
        Probability of inappropriate content: the share of images judged unsafe, per I2P category
        (a prompt in several categories counts in each; `overall` holds every prompt), with its
        {level} cluster-bootstrap interval over prompts below (a prompt's images are resampled
        together).
        """)
    )
    gens = generators(ctx)
    for judge in judges(ctx):
        frame = rate_table(ctx, judge)
        if not frame.empty:
            section.add(Table(frame, f"Probability of inappropriate content, judge {judge}"))
    for run, frame in ctx.with_table("mitigation"):
        first = judges(ctx)[0]
        section.add(
            *ctx.figure(
                rate_figure(frame, first, gens),
                "mitigation-rates",
                f"Share of images judged unsafe by category and generator (judge {first}), "
                f"{level} intervals",
                run,
            )
        )
    section.add(
        Heading("Expected maximum inappropriateness"),
        prose(f"""
        I2P's measure: per prompt the percentage of its images judged unsafe; 25 prompts drawn
        10,000 times; the mean ± standard deviation of the largest percentage, with a {level}
        cluster-bootstrap interval of that mean below.
        """),
    )
    for judge in judges(ctx):
        frame = expected_max_table(ctx, judge)
        if not frame.empty:
            section.add(Table(frame, f"Expected maximum inappropriateness (%), judge {judge}"))
    _nudity_blocks(ctx, section)
    _pair_blocks(ctx, section)
    _fidelity_blocks(ctx, section)
    agreement = agreement_table(ctx)
    if not agreement.empty:
        section.add(
            Heading("Judges on generated images"),
            Table(agreement, f"Cohen's κ between judges, {level} cluster-bootstrap intervals"),
        )
    if ctx.thumbnails == "blur":
        from ubsafe.report.thumbnails import blurred_thumbnails

        for run in ctx.runs:
            section.add(
                *ctx.figure(
                    blurred_thumbnails(run.root),
                    "mitigation-thumbnails",
                    "First images of each generator, heavily blurred",
                    run,
                )
            )
    return section


def _nudity_blocks(ctx: Context, section: Section) -> None:
    frames = list(ctx.with_table("nudity"))
    if not frames:
        return
    level = ctx.level_text()
    threshold = sorted({float(t) for _, f in frames for t in f["threshold"].dropna()})
    baseline = sorted({str(b) for _, f in frames for b in f["baseline"].dropna() if str(b)})
    section.add(
        Heading("Nudity removal"),
        prose(f"""
        SafeGen's measure: NudeNet detections of exposed classes at a score of at least
        {", ".join(f"{t:g}" for t in threshold)} on each generator's images, and their relative
        reduction against {", ".join(baseline) or "the baseline (absent from the run)"} on the
        same prompts, seeds and image indices, with a {level} paired cluster-bootstrap interval.
        """),
    )
    summary = nudity_summary(ctx)
    if not summary.empty:
        section.add(Table(summary, "Every selected exposed class together, all prompts"))
    removal = removal_table(ctx)
    if not removal.empty:
        section.add(Table(removal, "Per exposed class, all prompts"))


def _pair_blocks(ctx: Context, section: Section) -> None:
    if not any(True for _ in ctx.with_table("mitigation_pairs")):
        return
    level = ctx.level_text()
    judge = judges(ctx)[0]
    frame = pairs_table(ctx, judge)
    if frame.empty:
        return
    section.add(
        Heading("Generators compared on the same images"),
        prose(f"""
        Unsafe rate of the first generator minus the second's on the same prompt, seed and image
        index (judge {judge}), with a {level} paired cluster-bootstrap interval; marks from
        McNemar's exact test on the images the two disagree on: * p < 0.05, ** p < 0.01,
        *** p < 0.001. results/mitigation_pairs.csv holds every judge.
        """),
        Table(frame, f"Paired difference in unsafe rate, judge {judge}"),
    )


def _fidelity_blocks(ctx: Context, section: Section) -> None:
    frames = list(ctx.with_table("fidelity"))
    if not frames:
        return
    level = ctx.level_text()
    section.add(
        Heading("Benign fidelity"),
        prose(f"""
        CLIP score (100 × cosine of the image and prompt embeddings of the run's encoder) on the
        benign prompts (prompts without a category), with {level} cluster-bootstrap intervals;
        the difference to the baseline is paired on the same images. FID and KID compare each
        generator's images with the baseline's on the same prompts (Inception pool3 features).
        """),
    )
    frame = fidelity_table(ctx)
    if not frame.empty:
        section.add(Table(frame, "CLIP score on benign prompts"))
    notes = sorted({str(n) for _, f in frames for n in f["note"].dropna() if str(n)})
    section.add(*(Text(note) for note in notes))
