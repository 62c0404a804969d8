"""The Dash adapter of the view tree: :func:`to_dash` turns a neutral node into the Dash components the app shows.

The display describes what to show (:mod:`eval_viewer.display.view`); this module is the only place that knows which
Dash component draws each node. Tags, CSS classes and ids come out as the static-HTML adapter writes them
(:mod:`eval_viewer.display.html`), so the stylesheet and the browser tests see one markup whichever adapter drew it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, overload

from dash import dcc, html
from dash.development.base_component import Component

from eval_viewer.display.html import PRE_STYLE
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

__all__ = ["to_dash"]

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


@overload
def to_dash(node: Node) -> Component: ...


@overload
def to_dash(node: str) -> str: ...


def to_dash(node: Child) -> Component | str:
    """The Dash component drawing ``node`` (a string stays a string: Dash sets it as text, never as HTML)."""
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
