"""The static-HTML adapter of the view tree: HTML fragments, whole self-contained pages, and notebook output.

:func:`to_html` writes one node as an HTML fragment with the same tags and CSS classes the Dash app produces, so the
app's stylesheet styles a report exactly like the app. Every text is escaped with :func:`html.escape`; figures go
through :func:`plotly.io.to_html` (they need plotly.js on the page, loaded once: :func:`plotlyjs_script`).

:func:`page` writes a whole document that opens offline, without a server: with ``plotly_js="inline"`` it embeds the
installed plotly package's own plotly.js (so the figures match the Python side's version) and the app's stylesheet.

In Jupyter every node's ``_repr_html_`` is :func:`notebook_html`: the fragment, preceded the first time in a kernel by
plotly.js (inline: no internet needed) and the stylesheet's ``ev-`` rules (not its page-wide ones: a notebook keeps its
own look). Once per kernel means that an output shown after the one carrying plotly.js was cleared *and* the page
reloaded draws no figure; call :func:`reset_notebook` and show it again.
"""

from __future__ import annotations

import html
import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

import plotly.io
import plotly.offline
from plotly.io._utils import plotly_cdn_url

from eval_viewer.display.view import (
    Badge,
    Caption,
    Child,
    Details,
    Figure,
    Group,
    Image,
    Node,
    Problem,
    Table,
    Text,
    children_of,
)

__all__ = ["to_html", "page", "notebook_html", "reset_notebook", "plotlyjs_script", "stylesheet", "assets_dir",
           "PRE_STYLE", "Html", "link", "PLOTLYJS_FILE"]

log = logging.getLogger(__name__)

PlotlyJs = Optional[Literal["inline", "cdn", "directory"]]
PLOTLYJS_FILE = "plotly.min.js"
"""What ``plotly_js="directory"`` loads, from the page's own folder (the writer puts the installed bundle there)."""

PRE_STYLE: dict[str, str] = {"whiteSpace": "pre-wrap", "overflowWrap": "anywhere"}
"""Inline style of preformatted text (``Text(style="pre")``) in both adapters: long lines wrap, even inside words."""

_TEXT_TAGS = {"plain": "div", "inline": "span", "pre": "pre", "bold": "b", "h2": "h2", "h3": "h3"}


def _attrs(cls: str = "", id: Any = None, style: Mapping[str, str] | None = None, **extra: Any) -> str:
    """`` class="..." id="..."``: escaped; dict ids written as JSON (the app's pattern-matching ids)."""
    parts: list[str] = []
    if id is not None:
        parts.append(f'id="{html.escape(id if isinstance(id, str) else json.dumps(id, sort_keys=True))}"')
    if cls:
        parts.append(f'class="{html.escape(cls)}"')
    if style:
        css = "; ".join(f"{re.sub('([A-Z])', lambda m: '-' + m[1].lower(), k)}: {v}" for k, v in style.items())
        parts.append(f'style="{html.escape(css)}"')
    for name, value in extra.items():
        if value is not None:
            parts.append(f'{html.escape(name)}="{html.escape(str(value))}"')
    return (" " + " ".join(parts)) if parts else ""


def _element(tag: str, inner: str, **attrs: Any) -> str:
    return f"<{tag}{_attrs(**attrs)}>{inner}</{tag}>"


def _children(children: Iterable[Child]) -> str:
    return "".join(to_html(child) for child in children)


def _figure(node: Figure) -> str:
    div_id = f"ev-fig-{uuid.uuid4().hex[:12]}"
    body = plotly.io.to_html(node.figure, full_html=False, include_plotlyjs=False, config=dict(node.config),
                             div_id=div_id, default_height=f"{node.height}px", validate=False)
    return _element("div", body, cls=node.cls, id=node.id, style={"height": f"{node.height}px"})


def _table(node: Table) -> str:
    head = ""
    if node.header:
        head = "<thead><tr>" + "".join(_element("th", html.escape(h)) for h in node.header) + "</tr></thead>"
    rows = []
    for row in node.rows:
        cells = [_element("th" if node.row_headers and i == 0 else "td", to_html(cell)) for i, cell in enumerate(row)]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _element("table", head + "<tbody>" + "".join(rows) + "</tbody>", cls=node.cls)


class Html(str):
    """A fragment this adapter wrote already (:func:`link`): :func:`to_html` passes it through unescaped. Only this
    module makes one; any other adapter sees a plain string and shows it as text."""


def link(text: str, href: str, cls: str = "") -> Html:
    """An ``<a href>`` (a ``#fragment`` in a static report): the view tree has no link node because the app
    navigates with callbacks; a static page needs anchors, and only this adapter writes them."""
    return Html(_element("a", html.escape(text), cls=cls, href=href))


def to_html(node: Child) -> str:
    """``node`` as an HTML fragment (figures need plotly.js on the page: :func:`page` or :func:`plotlyjs_script`)."""
    if isinstance(node, Html):
        return str(node)
    if isinstance(node, str):
        return html.escape(node)
    if isinstance(node, Group):
        data = {f"data-{k}": v for k, v in node.data.items()}
        return _element(node.tag, _children(children_of(node)), cls=node.cls, id=node.id, **data)
    if isinstance(node, Text):
        style = PRE_STYLE if node.style == "pre" else None
        return _element(_TEXT_TAGS[node.style], html.escape(node.text), cls=node.cls, style=style)
    if isinstance(node, (Caption,)):
        return _element("div", html.escape(node.text), cls=node.cls)
    if isinstance(node, Badge):
        return _element("span", html.escape(node.text), cls=node.cls)
    if isinstance(node, Figure):
        return _figure(node)
    if isinstance(node, Image):
        return f"<img{_attrs(node.cls, src=node.src, width=node.width, height=node.height, alt=node.alt)}>"
    if isinstance(node, Table):
        return _table(node)
    if isinstance(node, Details):
        return _element("details", _element("summary", html.escape(node.summary)) + _children(children_of(node)),
                        cls=node.cls)
    if isinstance(node, Problem):
        inner = _element("div", html.escape(node.title), cls="ev-error-title")
        if node.message:
            inner += _element("pre", html.escape(node.message), cls="ev-error-message")
        if node.items:
            inner += "<ul>" + "".join(_element("li", html.escape(item)) for item in node.items) + "</ul>"
        return _element("div", inner, cls=node.cls)
    raise TypeError(f"not a view node: {type(node).__name__}")


def assets_dir() -> Path:
    """The folder of the app's CSS and JS, found without importing Dash.

    In an installed wheel the top-level ``assets/`` ships as the package ``eval_viewer.assets``, i.e.
    ``<site-packages>/eval_viewer/assets``; in a source checkout it is ``<repo>/assets`` beside the package. (The same
    search as :func:`eval_viewer.app.assets_dir`, which the app may delegate here.)
    """
    import eval_viewer

    package_root = Path(eval_viewer.__file__).resolve().parent
    for candidate in (package_root / "assets", package_root.parent / "assets"):
        if (candidate / "style.css").is_file():
            return candidate
    log.warning("No assets folder found next to %s; pages will be unstyled", package_root)
    return package_root / "assets"


@lru_cache(maxsize=1)
def stylesheet() -> str:
    """The app's stylesheet (``assets/style.css``), or ``""`` when it cannot be found."""
    path = assets_dir() / "style.css"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        log.warning("Cannot read %s; pages will be unstyled", path)
        return ""


def _scoped(css: str) -> str:
    """The rules of ``css`` whose selectors are all ``.ev-*`` classes (and ``:root``'s variables): what a view needs,
    without the page-wide rules (``body``, ``*``) that would restyle a notebook around it."""
    rules = re.findall(r"([^{}@]+)\{([^{}]*)\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S))
    kept = [f"{sel.strip()} {{{body}}}" for sel, body in rules
            if all(s.strip().startswith((".ev-", ":root")) for s in sel.split(","))]
    return "\n".join(kept)


@lru_cache(maxsize=1)
def _plotlyjs() -> str:
    return plotly.offline.get_plotlyjs()


def plotlyjs_script(mode: PlotlyJs = "inline") -> str:
    """A ``<script>`` loading plotly.js: ``"inline"`` embeds the installed package's bundle (about 5 MB; works
    offline), ``"cdn"`` links the same version on Plotly's CDN, ``"directory"`` loads :data:`PLOTLYJS_FILE` from the
    page's folder (the writer copies it there), None writes nothing (the page provides it)."""
    if mode is None:
        return ""
    if mode == "directory":
        return f'<script charset="utf-8" src="{PLOTLYJS_FILE}"></script>'
    if mode == "cdn":
        return f'<script charset="utf-8" src="{html.escape(plotly_cdn_url())}"></script>'
    if mode == "inline":
        # Guarded so a page (or a notebook) that already has plotly.js keeps the one it has.
        return f'<script type="text/javascript">if (!window.Plotly) {{\n{_plotlyjs()}\n}}</script>'
    raise ValueError(f"plotly_js must be 'inline', 'cdn', 'directory' or None, not {mode!r}")


def page(nodes: Child | Iterable[Child], title: str = "eval-viewer", plotly_js: PlotlyJs = "inline",
         css: str | None = None) -> str:
    """A whole HTML document showing ``nodes``: plotly.js per ``plotly_js`` (see :func:`plotlyjs_script`) and the
    stylesheet ``css`` (default: the app's own, :func:`stylesheet`; ``""`` for none), both written into the page, so
    with ``"inline"`` it opens offline from a file."""
    items = [nodes] if isinstance(nodes, (str, Node)) else list(nodes)
    style = stylesheet() if css is None else css
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        + (f"<style>\n{style}\n</style>\n" if style else "")
        + plotlyjs_script(plotly_js)
        + "\n</head>\n<body>\n<main class=\"ev-main\">\n"
        + "\n".join(to_html(node) for node in items)
        + "\n</main>\n</body>\n</html>\n"
    )


_notebook_ready = False


def reset_notebook() -> None:
    """Make the next notebook output carry plotly.js and the styles again (after clearing the output that had them)."""
    global _notebook_ready
    _notebook_ready = False


def notebook_html(node: Child) -> str:
    """What Jupyter shows for ``node``: its fragment, preceded by plotly.js and the ``ev-`` styles the first time in
    this kernel (inline, so a notebook without internet draws its figures)."""
    global _notebook_ready
    head = ""
    if not _notebook_ready:
        head = f"<style>\n{_scoped(stylesheet())}\n</style>\n" + plotlyjs_script("inline")
        _notebook_ready = True
    return head + _element("div", to_html(node), cls="ev-notebook")
