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
    """A table column heading; ``numeric`` right-aligns the column."""

    text: str
    numeric: bool = False


@dataclass
class Row:
    """A table row: its cells and an optional CSS class (e.g. to mark the selected layer)."""

    cells: list[Cell]
    css: str = ""


@dataclass
class Table:
    """A table for the template; ``sortable`` and ``scroll`` switch on its sort script and scroll box."""

    id: str | None
    headers: list[Header]
    rows: list[Row]
    sortable: bool = False
    scroll: bool = False


@dataclass
class Paragraph:
    """A paragraph of text with an optional CSS class (``muted``, ``note warn``, ...)."""

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
    """One section of the report: its anchor, title, navigation label and blocks, in page order."""

    anchor: str
    title: str
    nav: str
    blocks: list[Block]


def cell(value: Any, style: str = "") -> Cell:
    """A text cell; None shows as an em dash."""
    return Cell(() if value is None else (Part(value, style),))


def parts(*items: Part) -> Cell:
    """A cell of several styled parts (text and code mixed)."""
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
    """``value`` as a cell: a :class:`Cell` as it is, anything else as a text cell."""
    return value if isinstance(value, Cell) else cell(value)


def make_table(headers: Sequence[str | Header], rows: Iterable[Sequence[Any]], *, table_id: str | None = None,
               sortable: bool = False, scroll: bool = False, row_classes: Sequence[str] | None = None) -> Table:
    """Plain values become text cells; :class:`Cell` values carry alignment and a sort key."""
    body = [Row([as_cell(v) for v in row], (row_classes[i] if row_classes else "") or "")
            for i, row in enumerate(rows)]
    return Table(table_id, [h if isinstance(h, Header) else Header(h) for h in headers], body, sortable, scroll)


def table_block(table: Table, heading: str = "", before: Sequence[Paragraph] = (),
                after: Sequence[Paragraph] = ()) -> Block:
    """A table as a block, with optional paragraphs before and after it."""
    return Block("table", heading=heading, table=table, before=list(before), after=list(after))


def paragraph_block(*items: Paragraph, heading: str = "") -> Block:
    """Paragraphs as one block, under an optional heading."""
    return Block("paragraphs", heading=heading, items=list(items))
