"""Escaping dataset strings for each output format: HTML, Markdown, CSV and the terminal.

Sample ids, category folder names, skip reasons, run and dataset paths come from files that a user
downloaded. Each output shows them as text, never as markup, formulas or terminal commands.
"""

from __future__ import annotations

import html
import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: C0 controls (except newline and tab), DEL, C1 controls, and the bidirectional overrides that
#: reorder what a terminal shows.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`), lines and tabs kept."""
    return _CONTROL.sub(_escaped, text)


def html_text(text: str) -> str:
    """Text for an HTML element or attribute value."""
    return html.escape(terminal(text), quote=True)


#: Characters with a meaning anywhere in CommonMark/GitHub Markdown (brackets also guard links and
#: images, so `(`, `)` and `!` need nothing), escaped with a backslash.
_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]|~])")
#: At the start of a block: headings, lists, setext underlines, block quotes.
_MARKDOWN_START = re.compile(r"^(\s*)(?:([#+\-=])|(\d+)([.)]))")
_HTML_SIGNIFICANT = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}


def markdown_text(text: str) -> str:
    """Text for a Markdown paragraph, heading or table cell: HTML-significant characters become
    entities (Markdown viewers render raw HTML), Markdown syntax is backslash-escaped, and line
    breaks become spaces (a line break would end a table row or start a block)."""
    text = terminal(text).replace("\r", " ").replace("\n", " ")
    text = "".join(_HTML_SIGNIFICANT.get(ch, ch) for ch in text)
    text = _MARKDOWN_INLINE.sub(r"\\\1", text)
    return _MARKDOWN_START.sub(_escape_start, text, count=1)


def _escape_start(match: re.Match[str]) -> str:
    space, mark, number, dot = match.groups()
    return f"{space}\\{mark}" if mark else f"{space}{number}\\{dot}"


#: A spreadsheet reads a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A CSV cell that a spreadsheet shows as text: a leading formula character gets a `'` in
    front (OWASP's advice). Cells already starting with quotes before such a character get one
    more, so `csv_cell_value` undoes it exactly."""
    if value.lstrip("'").startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_cell_value(cell: str) -> str:
    """The value that `csv_cell` escaped."""
    if cell.startswith("'") and cell.lstrip("'").startswith(_FORMULA_START):
        return cell[1:]
    return cell


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of a pandas frame whose text cells (and text index) are `csv_cell`-escaped."""
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(lambda v: csv_cell(v) if isinstance(v, str) else v)
    return out


class TerminalFormatter(logging.Formatter):
    """Log lines for a terminal: secrets redacted, control characters shown escaped."""

    def format(self, record: logging.LogRecord) -> str:
        from ubsafe.redact import redact

        return terminal(redact(super().format(record)))
