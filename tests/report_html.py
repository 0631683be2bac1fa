"""Read a rendered report as a reader would: its tables (by caption) and images (stdlib parser)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class HtmlTable:
    caption: str = ""
    header: list[list[str]] = field(default_factory=list)  # header rows, colspans expanded
    body: list[list[str]] = field(default_factory=list)

    def column(self, *labels: str) -> int:
        """Index of the column whose header cells, top to bottom, end with `labels`."""
        width = max(len(row) for row in self.header)
        for j in range(width):
            stack = [row[j] if j < len(row) else "" for row in self.header]
            if [s for s in stack if s][-len(labels) :] == list(labels):
                return j
        raise KeyError(f"no column {labels} in {self.caption!r}: {self.header}")

    def rows(self) -> list[list[str]]:
        """Body rows with blanked repeated keys filled in from the row above."""
        out: list[list[str]] = []
        for row in self.body:
            filled = list(row)
            if out:
                for i, cell in enumerate(filled):
                    if cell:
                        break
                    filled[i] = out[-1][i]
            out.append(filled)
        return out

    def cell(self, row_keys: tuple[str, ...], *column: str) -> str:
        j = self.column(*column)
        for row in self.rows():
            if tuple(row[: len(row_keys)]) == row_keys:
                return row[j]
        raise KeyError(f"no row {row_keys} in {self.caption!r}")


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[HtmlTable] = []
        self.images: list[dict[str, str]] = []
        self._table: HtmlTable | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._span = 1
        self._in_head = False
        self._in_caption = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = HtmlTable()
        elif tag == "caption":
            self._in_caption = True
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell, self._span = [], int(a.get("colspan", "1"))
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self._in_caption = False
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.extend(["".join(self._cell).strip()] * self._span)
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            (self._table.header if self._in_head else self._table.body).append(self._row)
            self._row = None
        elif tag == "table" and self._table is not None:
            self.tables.append(self._table)
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._in_caption and self._table is not None:
            self._table.caption += data
        elif self._cell is not None:
            self._cell.append(data)
        self.text.append(data)


@dataclass
class Page:
    tables: list[HtmlTable]
    images: list[dict[str, str]]
    text: str

    def table(self, caption: str) -> HtmlTable:
        found = [t for t in self.tables if t.caption == caption]
        if len(found) != 1:
            raise KeyError(
                f"{len(found)} tables captioned {caption!r}; "
                f"have {[t.caption for t in self.tables]}"
            )
        return found[0]


def parse(html: str) -> Page:
    parser = _Parser()
    parser.feed(html)
    return Page(parser.tables, parser.images, " ".join("".join(parser.text).split()))
