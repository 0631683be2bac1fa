"""The report as a document (sections of text, tables and figures) and its HTML and Markdown forms.

Tables are pandas frames of display strings; a cell's line break separates a value from its
interval. The HTML page is self-contained: figures are embedded as base64 PNG, styles are inline,
nothing is fetched from anywhere.

Every string is escaped for its format (`ubsafe.escape`): dataset strings (sample ids, category
folder names, skip reasons, paths) show as text, never as markup; secrets are redacted from both
forms (`ubsafe.redact`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd

from ubsafe.escape import html_text, markdown_text
from ubsafe.redact import redact


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text."""

    text: str


def prose(text: str) -> Text:
    """A paragraph from text written across source lines (runs of whitespace become one space)."""
    return Text(" ".join(text.split()))


@dataclass(frozen=True)
class Table:
    """A table: `frame` holds display strings; its index becomes the leading (key) columns.

    Numeric tables keep each cell on its lines (value, then interval); `text` tables wrap and align
    left.
    """

    frame: pd.DataFrame
    caption: str
    text: bool = False


@dataclass(frozen=True)
class Figure:
    """A PNG figure; `name` is its file name under figures/ (without `.png`)."""

    name: str
    png: bytes
    caption: str
    width: int
    height: int


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a section."""

    text: str


Block = Text | Table | Figure | Heading


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self


@dataclass
class Document:
    title: str
    intro: list[str]
    sections: list[Section]
    meta: dict[str, str] = field(default_factory=dict)

    def figures(self) -> Iterator[Figure]:
        for section in self.sections:
            for block in section.blocks:
                if isinstance(block, Figure):
                    yield block


# --- shared table shaping -------------------------------------------------------------------


def _flat_rows(table: Table) -> tuple[list[list[str]], list[list[str]], int]:
    """(header rows, body rows, number of key columns), repeated leading keys blanked."""
    frame = table.frame
    keys = [str(n) if n is not None else "" for n in frame.index.names]
    n_keys = len(keys)
    columns = list(frame.columns)
    levels = frame.columns.nlevels
    header: list[list[str]] = []
    for level in range(levels):
        row = [keys[i] if level == levels - 1 else "" for i in range(n_keys)]
        row += [str(c[level]) if isinstance(c, tuple) else str(c) for c in columns]
        header.append(row)
    body: list[list[str]] = []
    previous: tuple[str, ...] = ()
    for index, values in zip(frame.index, frame.itertuples(index=False), strict=True):
        key = tuple(str(k) for k in (index if isinstance(index, tuple) else (index,)))
        shown = list(key)
        for i in range(n_keys - 1):  # the last key always shows
            if previous[: i + 1] == key[: i + 1]:
                shown[i] = ""
            else:
                break
        previous = key
        body.append([*shown, *(str(v) for v in values)])
    return header, body, n_keys


def _h(text: str) -> str:
    return html_text(text)


def _anchor(name: str) -> str:
    """An id or file name made of safe characters only."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


# --- HTML -----------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1400px;padding:0 24px 48px;color:#1d1d1f;background:#fff;line-height:1.45}
h1{font-size:1.7em;margin:24px 0 4px}
h2{margin-top:40px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{margin:24px 0 8px;font-size:1.1em}
nav ul{columns:3;list-style:none;padding:0}nav a{text-decoration:none;color:#0b57d0}
.table-wrap{overflow-x:auto;margin:8px 0 20px}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:4px 0;caption-side:top}
th,td{padding:3px 6px;border-bottom:1px solid #eee;white-space:pre;vertical-align:top}
thead th{background:#f5f5f7;border-bottom:1px solid #ccc;text-align:center;white-space:normal;
vertical-align:bottom}
td{text-align:right}td.key{text-align:left;font-weight:500}
td.key:first-child{position:sticky;left:0;background:#fff}
table.text td{text-align:left;white-space:normal}
.ci,.n{color:#666;font-size:10.5px}.n{color:#888}.small{font-style:italic;color:#a6530a}
figure{margin:12px 0 28px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}.note{color:#555}
"""


def _html_table(table: Table) -> str:
    header, body, n_keys = _flat_rows(table)
    kind = ' class="text"' if table.text else ""
    out = [
        f'<div class="table-wrap"><table{kind}>\n<caption>{_h(table.caption)}</caption>\n<thead>'
    ]
    for level, row in enumerate(header):
        cells = []
        i = 0
        while i < len(row):
            span = 1
            # Upper header levels span equal neighbours (one "real" over its severities).
            if level < len(header) - 1 and i >= n_keys:
                while (
                    i + span < len(row)
                    and row[i + span] == row[i]
                    and all(header[u][i + span] == header[u][i] for u in range(level))
                ):
                    span += 1
            attr = f' colspan="{span}"' if span > 1 else ""
            cells.append(f"<th{attr}>{_h(row[i])}</th>")
            i += span
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</thead>\n<tbody>")
    for row in body:
        cells = [
            f'<td class="key">{_h(v)}</td>' if i < n_keys else f"<td>{_html_cell(v)}</td>"
            for i, v in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _html_cell(text: str) -> str:
    """A value, then its interval and its n (`n=…`) on their own lines in small print; a small
    cell's interval and n (flagged `†`) in italics."""
    head, *rest = text.split("\n")
    small = " small" if rest and rest[-1].startswith("n=") and rest[-1].endswith("†") else ""
    parts = [_h(head)]
    for line in rest:
        kind = "n" if line.startswith("n=") else "ci"
        parts.append(f'<span class="{kind}{small}">{_h(line)}</span>')
    return "<br>".join(parts)


def _html_figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    caption = _h(figure.caption)
    return (
        f'<figure id="fig-{_anchor(figure.name)}"><img src="data:image/png;base64,{data}" '
        f'width="{figure.width}" height="{figure.height}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _html_block(block: Block) -> str:
    if isinstance(block, Text):
        return f"<p>{_h(block.text)}</p>"
    if isinstance(block, Heading):
        return f"<h3>{_h(block.text)}</h3>"
    if isinstance(block, Table):
        return _html_table(block)
    return _html_figure(block)


def to_html(doc: Document) -> str:
    """The whole report as one self-contained HTML page."""
    meta = "".join(
        f'<meta name="{_h(k)}" content="{_h(v)}">\n' for k, v in sorted(doc.meta.items())
    )
    toc = "".join(
        f'<li><a href="#{_anchor(s.anchor)}">{_h(s.title)}</a></li>' for s in doc.sections
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        meta + f"<title>{_h(doc.title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<header><h1>{_h(doc.title)}</h1>",
        *(f'<p class="note">{_h(line)}</p>' for line in doc.intro),
        f"<nav><ul>{toc}</ul></nav></header>",
    ]
    for section in doc.sections:
        parts.append(f'<section id="{_anchor(section.anchor)}"><h2>{_h(section.title)}</h2>')
        parts.extend(_html_block(block) for block in section.blocks)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return redact("\n".join(parts))


# --- Markdown -------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return markdown_text(text)


def _md_table(table: Table) -> str:
    header, body, n_keys = _flat_rows(table)
    names = [" · ".join(part for part in parts if part) for parts in zip(*header, strict=True)]
    align = [":--" if i < n_keys or table.text else "--:" for i in range(len(names))]
    lines = [f"**{_md_cell(table.caption)}**", ""]
    lines.append("| " + " | ".join(_md_cell(n) for n in names) + " |")
    lines.append("|" + "|".join(align) + "|")
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in body]
    return "\n".join(lines)


def _md_block(block: Block) -> str:
    if isinstance(block, Text):
        return markdown_text(block.text)
    if isinstance(block, Heading):
        return f"### {markdown_text(block.text)}"
    if isinstance(block, Table):
        return _md_table(block)
    caption = markdown_text(block.caption)
    return f"![{caption}](figures/{_anchor(block.name)}.png)\n\n*{caption}*"


def to_markdown(doc: Document) -> str:
    """The report as Markdown; figures link to figures/<name>.png beside it."""
    parts = [f"# {markdown_text(doc.title)}", *(markdown_text(line) for line in doc.intro)]
    parts.append(
        "\n".join(f"- [{markdown_text(s.title)}](#{_anchor(s.anchor)})" for s in doc.sections)
    )
    for section in doc.sections:
        parts.append(f'<a id="{_anchor(section.anchor)}"></a>\n\n## {markdown_text(section.title)}')
        parts.extend(_md_block(block) for block in section.blocks)
    return redact("\n\n".join(parts) + "\n")
