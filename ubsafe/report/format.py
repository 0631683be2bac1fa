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
