"""How numbers read in the report's cells: values, intervals, p-values and significance marks."""

from __future__ import annotations

import math
from typing import Any

#: A cell with no row behind it (the classifier does not cover that category, or the run lacks it).
ABSENT = "—"
#: A row whose metric is undefined (e.g. recall with no unsafe image).
UNDEFINED = "n/a"

#: p-value thresholds → mark, strongest first.
SIGNIFICANCE: tuple[tuple[float, str], ...] = ((0.001, "***"), (0.01, "**"), (0.05, "*"))

SOURCE_LABELS: dict[str, str] = {"real": "real", "ai": "AI", "all": "all"}


def is_missing(value: Any) -> bool:
    try:
        return value is None or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def number(value: Any, digits: int = 3) -> str:
    """`0.812`, or `n/a` for NaN."""
    return UNDEFINED if is_missing(value) else f"{float(value):.{digits}f}"


def signed(value: Any, digits: int = 3) -> str:
    """`+0.045` / `-0.045`: a difference whose sign matters."""
    return UNDEFINED if is_missing(value) else f"{float(value):+.{digits}f}"


def interval(lo: Any, hi: Any, digits: int = 3, *, sign: bool = False) -> str:
    """`[0.781, 0.843]`, or empty when either end is undefined."""
    if is_missing(lo) or is_missing(hi):
        return ""
    show = signed if sign else number
    return f"[{show(lo, digits)}, {show(hi, digits)}]"


def with_interval(value: Any, lo: Any, hi: Any, digits: int = 3, *, sign: bool = False) -> str:
    """The value, and its interval on a second line (HTML breaks it there, Markdown joins it)."""
    head = (signed if sign else number)(value, digits)
    tail = interval(lo, hi, digits, sign=sign)
    return f"{head}\n{tail}" if tail and not is_missing(value) else head


#: Cells resting on fewer images than this are flagged: their bootstrap interval is not reliable.
SMALL_N = 20
#: The flag after a small cell's n (the report explains it once per section).
SMALL_MARK = "†"


def n_line(n: Any) -> str:
    """`n=34`, or `n=7 †` for a cell on fewer than SMALL_N images (empty when n is unknown)."""
    if is_missing(n):
        return ""
    count = round(float(n))
    return f"n={count:,} {SMALL_MARK}" if count < SMALL_N else f"n={count:,}"


def measured(value: Any, lo: Any, hi: Any, n: Any, digits: int = 3, *, sign: bool = False) -> str:
    """The value, its interval and its n on three lines (`with_interval` plus `n_line`)."""
    head = with_interval(value, lo, hi, digits, sign=sign)
    tail = n_line(n)
    return f"{head}\n{tail}" if tail else head


def small_note(level: str) -> str:
    """The one-line explanation of n and of the flag on small cells."""
    return (
        f"n: the images behind a cell. {SMALL_MARK} n < {SMALL_N}: too few images for the "
        f"{level} bootstrap interval to mean much — it can shrink to a point (say "
        "[1.000, 1.000] from seven images all judged right); such intervals are set in italics."
    )


def mark(p_value: Any) -> str:
    """`***` p < 0.001, `**` p < 0.01, `*` p < 0.05, else empty."""
    if is_missing(p_value):
        return ""
    for threshold, symbol in SIGNIFICANCE:
        if float(p_value) < threshold:
            return symbol
    return ""


def p_text(p_value: Any) -> str:
    """`<0.001` or three decimals, followed by its significance mark."""
    if is_missing(p_value):
        return UNDEFINED
    p = float(p_value)
    text = "<0.001" if p < 0.001 else f"{p:.3f}"
    symbol = mark(p)
    return f"{text} {symbol}" if symbol else text


def integer(value: Any) -> str:
    return UNDEFINED if is_missing(value) else f"{round(float(value)):,}"


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source, source)


def severity_label(perturbation_family: str, severity: Any) -> str:
    """Corruptions: `sev 3`; attacks: `ε 4/255`; `paper` / `paper ε` for the paper's setting (0)."""
    value = float(severity)
    attack = perturbation_family == "attack"
    if value == 0:
        return "paper ε" if attack else "paper"
    return f"ε {value:g}/255" if attack else f"sev {value:g}"
