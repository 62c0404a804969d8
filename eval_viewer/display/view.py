"""The neutral view tree: what every renderer returns, and what the Dash, notebook and static-HTML adapters draw.

A renderer describes *what* to show (a Plotly figure, a PNG, a table, a caption, a problem) with a handful of frozen
dataclasses; an adapter decides *how*: :func:`eval_viewer.app.dash_view.to_dash` builds Dash components,
:func:`eval_viewer.display.html.to_html` writes HTML text, and every node's ``_repr_html_`` shows it in a notebook.
Nothing here imports Dash, so a notebook or a report never pays for (or depends on) the web app.

Every node carries ``cls``, the CSS classes of the stylesheet ``assets/style.css``, so the three adapters produce the
same markup and one stylesheet styles them all. Ids (``Group.id``, ``Figure.id``) are plain JSON values (the app's
pattern-matching id dicts), never Dash objects. Children and table cells may be plain strings: text, always escaped.

    Group      a container (``div``, ``section`` or ``span``), with optional ``data-*`` attributes
    Text       text: a block, an inline run, preformatted, bold, or a heading
    Caption    one line of small print under a figure
    Badge      a short inline label (an item's kind)
    Figure     a Plotly figure (zoom, hover, clicks)
    Image      a PNG that needs no zoom or hover: a plain ``<img>``
    Table      rows of cells, optionally a header row and a header column
    Details    a folded block with a summary line
    Problem    what went wrong, for a user: a title, a message and/or a list

Two choices kept the tree small. A group's title is its first child (``Text(title, cls="ev-panel-title")``, or an
``h2`` / ``h3`` for sections and cards) rather than a ``title`` field: titles differ in tag and class from one kind of
group to another, and a field would have made every adapter re-derive them. And where a colour carries meaning (a
verdict, a chosen score) the class says it (``ev-match``, ``ev-score-chosen``) instead of a separate ``tone``: every
adapter already writes classes, and one stylesheet gives them their colours.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import plotly.graph_objects as go

__all__ = ["FIGURE_HEIGHT", "Node", "Child", "Group", "Text", "Caption", "Badge", "Figure", "Image", "Table",
           "Details", "Problem", "TextStyle", "GroupTag", "walk", "children_of", "texts"]

TextStyle = Literal["plain", "inline", "pre", "bold", "h2", "h3"]
"""``plain``: a block of text; ``inline``: a run inside a line; ``pre``: preformatted, wrapped (code, messages);
``bold``: an emphasised run; ``h2`` / ``h3``: a section / card heading."""
GroupTag = Literal["div", "section", "span"]
FIGURE_HEIGHT = 300
"""Pixel height of a figure whose layout sets none."""


@dataclass(frozen=True)
class Node:
    """Base of every view node. ``_repr_html_`` shows the node in Jupyter through the static-HTML adapter."""

    def _repr_html_(self) -> str:
        from eval_viewer.display.html import notebook_html  # the adapter imports this module

        return notebook_html(self)


Child = Union[Node, str]
"""What a container holds: a node, or a string shown as (escaped) text."""


def _tuple(items: Sequence[Child | None] | Child) -> tuple[Child, ...]:
    if isinstance(items, (str, Node)):
        return (items,)
    return tuple(item for item in items if item is not None)


@dataclass(frozen=True)
class Group(Node):
    """Nodes laid out together; ``cls`` says how (``ev-row``: side by side, ``ev-panel``: a titled block...).

    ``tag`` keeps the document's structure (a datapoint's four sections are ``section``s, a run of text inside a
    line a ``span``); ``data`` holds ``data-*`` attributes (``{"debugger": name}``) that tests and scripts select on;
    ``id`` is set only where the app re-draws or listens to the group. ``None`` children are dropped, so a renderer
    can write ``Group([figure, note if note else None])``.
    """

    children: Sequence[Child | None] = ()
    """Stored as a tuple, ``None`` entries dropped."""
    cls: str = ""
    tag: GroupTag = "div"
    id: Any = None
    data: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", _tuple(self.children))


@dataclass(frozen=True)
class Text(Node):
    """Text in one of a few semantic styles (:data:`TextStyle`); never interpreted as markup."""

    text: str
    cls: str = ""
    style: TextStyle = "plain"


@dataclass(frozen=True)
class Caption(Node):
    """One line of small print under a figure: shapes, ranges, counts (see :func:`eval_viewer.display.figures.caption`
    for joining parts)."""

    text: str
    cls: str = "ev-caption"


@dataclass(frozen=True)
class Badge(Node):
    """A short inline label: an item's kind, a verdict (``cls="ev-match"`` / ``"ev-mismatch"``)."""

    text: str
    cls: str = "ev-kind-tag"


@dataclass(frozen=True)
class Figure(Node):
    """A Plotly figure, for what needs zoom, hover or clicks. ``config`` is Plotly's config as given to the browser
    (the house config of :data:`eval_viewer.display.figures.GRAPH_CONFIG` unless a renderer asks for more); ``id`` is
    set only where the app listens to the figure (an attention overlay's clicks)."""

    figure: go.Figure
    id: Any = None
    cls: str = "ev-figure"
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        """Pixel height the figure is drawn at: its layout's, else :data:`FIGURE_HEIGHT`."""
        return int(self.figure.layout.height or FIGURE_HEIGHT)


@dataclass(frozen=True)
class Image(Node):
    """A picture that needs no zoom or hover, drawn as a plain ``<img>``: the browser decodes a PNG far faster than
    Plotly draws a figure. ``src`` is a ``data:image/png;base64,...`` URL (see :meth:`from_png`)."""

    src: str
    width: int | None = None
    height: int | None = None
    alt: str = ""
    cls: str = ""

    @staticmethod
    def from_png(png: bytes, **kwargs: Any) -> Image:
        """An image of PNG bytes (e.g. :func:`eval_viewer.display.encode.png_bytes`); ``kwargs``: the other fields."""
        return Image(src="data:image/png;base64," + base64.b64encode(png).decode("ascii"), **kwargs)


Cell = Child


@dataclass(frozen=True)
class Table(Node):
    """Rows of cells (strings or nodes). ``header``: a header row; ``row_headers``: the first cell of each row names
    the row (key/value tables)."""

    rows: Sequence[Sequence[Cell]]
    """Stored as a tuple of tuples."""
    header: Sequence[str] = ()
    cls: str = "ev-table"
    row_headers: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))
        object.__setattr__(self, "header", tuple(self.header))


@dataclass(frozen=True)
class Details(Node):
    """A block folded under a one-line ``summary`` (long tables a user opens when needed)."""

    summary: str
    children: Sequence[Child | None] = ()
    cls: str = "ev-details"

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", _tuple(self.children))


@dataclass(frozen=True)
class Problem(Node):
    """Something that could not be shown, said for a user: a ``title``, a ``message`` (preformatted: an exception's
    text) and/or a list of ``items`` (every problem of a datapoint). What an error box is in every adapter."""

    title: str
    message: str = ""
    items: Sequence[str] = ()
    cls: str = "ev-error"

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))


def children_of(node: Child) -> tuple[Child, ...]:
    """The direct children of ``node`` (table cells included), in document order."""
    if isinstance(node, (Group, Details)):
        return tuple(child for child in node.children if child is not None)
    if isinstance(node, Table):
        return tuple(cell for row in node.rows for cell in row)
    return ()


def walk(node: Child) -> Iterator[Child]:
    """``node`` and everything below it, depth first."""
    yield node
    for child in children_of(node):
        yield from walk(child)


def texts(node: Child) -> Iterator[str]:
    """Every piece of text ``node`` shows, in document order (what a reader, or a test, sees)."""
    for part in walk(node):
        if isinstance(part, str):
            yield part
        elif isinstance(part, (Text, Caption, Badge)):
            yield part.text
        elif isinstance(part, Details):
            yield part.summary
        elif isinstance(part, Table):
            yield from part.header
        elif isinstance(part, Problem):
            yield from (part.title, part.message, *part.items)
