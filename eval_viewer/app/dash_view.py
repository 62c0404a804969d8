"""The Dash adapter of the view tree: :func:`to_dash` turns a neutral node into the Dash components the app shows.

The display describes what to show (:mod:`eval_viewer.display.view`); this module is the only place that knows which
Dash component draws each node. Tags, CSS classes and ids come out as the static-HTML adapter writes them
(:mod:`eval_viewer.display.html`), so the stylesheet and the browser tests see one markup whichever adapter drew it.

``to_dash(node, lean=True)`` is what the app's datapoint view uses: the browser's time to mount a view grows with
the number of Dash components in it (each one is a React wrapper subscribed to the renderer's store), and most of a
view is markup nothing listens to. So a container whose subtree holds no id and no Plotly figure becomes *one*
component, its own tag and classes, whose children are the static-HTML adapter's escaped markup in
:data:`STATIC_ATTR`; ``assets/static.js`` puts that markup in place. Containers that hold an id (an item the app
re-draws, a fold, a clickable graph) stay components, so every callback finds what it listens to.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any, overload

from dash import dcc, html
from dash.development.base_component import Component

from eval_viewer.display.html import PRE_STYLE, to_html
from eval_viewer.display.view import (
    Badge,
    Caption,
    Child,
    Details,
    Figure,
    Group,
    Image,
    Problem,
    Table,
    Node,
    Text,
    children_of,
)

__all__ = ["to_dash", "STATIC_ATTR"]

STATIC_ATTR = "data-ev-html"
"""The attribute holding a static container's inner markup (written by :func:`eval_viewer.display.html.to_html`,
which escapes every text), put in place by ``assets/static.js``."""
_STATIC_MIN_NODES = 3
"""A container is drawn from markup only when that saves components (a lone text stays a component)."""

_GROUP_TAGS = {"div": html.Div, "section": html.Section, "span": html.Span}
_TEXT_TAGS = {"plain": html.Div, "inline": html.Span, "pre": html.Pre, "bold": html.B, "h2": html.H2, "h3": html.H3}


def _kwargs(cls: str, id: Any = None) -> dict[str, Any]:
    """``className`` when there are classes, ``id`` only when one is given (an id is only needed where the app
    listens to or re-draws a component)."""
    kwargs: dict[str, Any] = {}
    if cls:
        kwargs["className"] = cls
    if id is not None:
        kwargs["id"] = id
    return kwargs


def _list(children: Iterable[Child]) -> list[Component | str]:
    return [to_dash(child) for child in children]


def _figure(node: Figure) -> dcc.Graph:
    props: dict[str, Any] = {"figure": node.figure, "config": dict(node.config),
                             "style": {"height": f"{node.height}px"}, **_kwargs(node.cls, node.id)}
    return dcc.Graph(**props)


def _table(node: Table) -> html.Table:
    body = html.Tbody([
        html.Tr([(html.Th if node.row_headers and i == 0 else html.Td)(to_dash(cell)) for i, cell in enumerate(row)])
        for row in node.rows
    ])
    if not node.header:
        return html.Table(body, **_kwargs(node.cls))
    head = html.Thead(html.Tr([html.Th(h) for h in node.header]))
    return html.Table([head, body], **_kwargs(node.cls))


def _problem(node: Problem) -> html.Div:
    children: list[Component] = [html.Div(node.title, className="ev-error-title")]
    if node.message:
        children.append(html.Pre(node.message, className="ev-error-message"))
    if node.items:
        children.append(html.Ul([html.Li(item) for item in node.items]))
    return html.Div(children, **_kwargs(node.cls))


def _static_sizes(node: Child, sizes: dict[int, int]) -> int:
    """Fill ``sizes`` with the node count of every subtree that holds no id and no figure (keyed by ``id(node)``);
    returns the size of ``node``'s subtree, or -1 when something in it is listened to or is a figure."""
    own_live = isinstance(node, Figure) or (isinstance(node, Group) and node.id is not None)
    total = 1
    for child in children_of(node):
        size = _static_sizes(child, sizes)
        if size < 0:
            own_live = True
        total += max(size, 0)
    if own_live:
        return -1
    sizes[id(node)] = total
    return total


def _lean(node: Child, sizes: dict[int, int]) -> Component | str:
    skeleton = isinstance(node, Group) and node.tag == "section"  # a page's sections and headings stay components
    if not skeleton and isinstance(node, (Group, Table, Details)) and sizes.get(id(node), 0) >= _STATIC_MIN_NODES:
        return _static(node)
    if isinstance(node, Group):
        props = {**_kwargs(node.cls, node.id), **{f"data-{k}": v for k, v in node.data.items()}}
        return _GROUP_TAGS[node.tag]([_lean(child, sizes) for child in children_of(node)], **props)
    if isinstance(node, Details):
        return html.Details([html.Summary(node.summary), *[_lean(child, sizes) for child in children_of(node)]],
                            **_kwargs(node.cls))
    return to_dash(node)  # a leaf, or a table of live cells (none are made today): drawn in full


def _static(node: Group | Table | Details) -> Component:
    """``node`` as one component: its own element, its children as markup (see :data:`STATIC_ATTR`)."""
    if isinstance(node, Group):
        inner = "".join(to_html(child) for child in children_of(node))
        props = {**_kwargs(node.cls), **{f"data-{k}": v for k, v in node.data.items()}}
        props[STATIC_ATTR] = inner
        return _GROUP_TAGS[node.tag](**props)
    if isinstance(node, Details):
        inner = f"<summary>{escape(node.summary)}</summary>" + "".join(to_html(child) for child in children_of(node))
        return html.Details(**_kwargs(node.cls), **_markup(inner))
    whole = to_html(node)  # <table class=...>INNER</table>
    return html.Table(**_kwargs(node.cls), **_markup(whole[whole.index(">") + 1: -len("</table>")]))


def _markup(inner: str) -> dict[str, Any]:
    return {STATIC_ATTR: inner}


@overload
def to_dash(node: Node, *, lean: bool = False) -> Component: ...


@overload
def to_dash(node: str, *, lean: bool = False) -> str: ...


def to_dash(node: Child, *, lean: bool = False) -> Component | str:
    """The Dash component drawing ``node`` (a string stays a string: Dash sets it as text, never as HTML).

    ``lean``: containers nothing listens to are drawn from markup as one component each (see the module's
    docstring); the page looks the same, with far fewer components for the browser to mount."""
    if lean:
        sizes: dict[int, int] = {}
        _static_sizes(node, sizes)
        return _lean(node, sizes)
    if isinstance(node, str):
        return node
    if isinstance(node, Group):
        props = {**_kwargs(node.cls, node.id), **{f"data-{k}": v for k, v in node.data.items()}}
        return _GROUP_TAGS[node.tag](_list(children_of(node)), **props)
    if isinstance(node, Text):
        props = _kwargs(node.cls)
        if node.style == "pre":
            props["style"] = dict(PRE_STYLE)
        return _TEXT_TAGS[node.style](node.text, **props)
    if isinstance(node, Caption):
        return html.Div(node.text, **_kwargs(node.cls))
    if isinstance(node, Badge):
        return html.Span(node.text, **_kwargs(node.cls))
    if isinstance(node, Figure):
        return _figure(node)
    if isinstance(node, Image):
        props = {k: v for k, v in (("width", node.width), ("height", node.height)) if v is not None}
        return html.Img(src=node.src, alt=node.alt, **props, **_kwargs(node.cls))
    if isinstance(node, Table):
        return _table(node)
    if isinstance(node, Details):
        return html.Details([html.Summary(node.summary), *_list(children_of(node))], **_kwargs(node.cls))
    if isinstance(node, Problem):
        return _problem(node)
    raise TypeError(f"not a view node: {type(node).__name__}")
