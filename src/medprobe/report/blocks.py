"""What the report's templates render: plain values with a style name, never HTML.

Sections of the page are lists of :class:`Block` (a table, a definition list, paragraphs, ...);
table cells are runs of :class:`Part` whose ``style`` the template turns into markup. Keeping
HTML out of these values is what lets the Jinja2 templates escape every piece of text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


@dataclass(frozen=True)
class Part:
    """A run of text in a cell; ``style`` picks its markup in the template (code, strong, muted,
    path, hash, layers) and ``break_before`` starts a new line."""

    text: Any = ""
    style: str = ""
    break_before: bool = False
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cell:
    """A table cell: its parts (empty shows an em dash), a numeric sort key, and alignment."""

    parts: tuple[Part, ...]
    sort: float | None = None
    numeric: bool = False


@dataclass(frozen=True)
class Header:
    text: str
    numeric: bool = False


@dataclass
class Row:
    cells: list[Cell]
    css: str = ""


@dataclass
class Table:
    id: str | None
    headers: list[Header]
    rows: list[Row]
    sortable: bool = False
    scroll: bool = False


@dataclass
class Paragraph:
    text: str
    css: str = ""


@dataclass
class Block:
    """One piece of a section: a table, a definition list, paragraphs, a list, ... (see the template)."""

    kind: str
    heading: str = ""
    table: Table | None = None
    items: list[Any] = field(default_factory=list)
    text: str = ""
    before: list[Paragraph] = field(default_factory=list)
    after: list[Paragraph] = field(default_factory=list)
    figures: list[dict[str, str]] = field(default_factory=list)
    notes: list[Paragraph] = field(default_factory=list)


@dataclass
class Section:
    anchor: str
    title: str
    nav: str
    blocks: list[Block]


def cell(value: Any, style: str = "") -> Cell:
    """A text cell; None shows as an em dash."""
    return Cell(() if value is None else (Part(value, style),))


def parts(*items: Part) -> Cell:
    return Cell(tuple(items))


def code_parts(values: Iterable[Any]) -> tuple[Part, ...]:
    """``a, b, c`` with each value as code."""
    out: list[Part] = []
    for index, value in enumerate(values):
        if index:
            out.append(Part(", "))
        out.append(Part(value, "code"))
    return tuple(out)


def as_cell(value: Any) -> Cell:
    return value if isinstance(value, Cell) else cell(value)


def make_table(headers: Sequence[str | Header], rows: Iterable[Sequence[Any]], *, table_id: str | None = None,
               sortable: bool = False, scroll: bool = False, row_classes: Sequence[str] | None = None) -> Table:
    """Plain values become text cells; :class:`Cell` values carry alignment and a sort key."""
    body = [Row([as_cell(v) for v in row], (row_classes[i] if row_classes else "") or "")
            for i, row in enumerate(rows)]
    return Table(table_id, [h if isinstance(h, Header) else Header(h) for h in headers], body, sortable, scroll)


def table_block(table: Table, heading: str = "", before: Sequence[Paragraph] = (),
                after: Sequence[Paragraph] = ()) -> Block:
    return Block("table", heading=heading, table=table, before=list(before), after=list(after))


def paragraph_block(*items: Paragraph, heading: str = "") -> Block:
    return Block("paragraphs", heading=heading, items=list(items))
