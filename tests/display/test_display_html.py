"""The static-HTML adapter: escaped text, figures and PNGs in fragments, whole offline pages, notebook output."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import plotly.offline
import pytest

from display_helpers import make_record
from eval_viewer.backend.model import Item
from eval_viewer.display import (
    Badge,
    Caption,
    Details,
    Figure,
    Group,
    Image,
    Problem,
    Table,
    Text,
    datapoint_view,
    page,
    render_item,
    to_html,
)
from eval_viewer.display import html as html_adapter
from eval_viewer.display.encode import png_bytes
from eval_viewer.display.figures import new_figure
from eval_viewer.log_format import Kind

EVIL = '<script>alert("x")</script> & "quotes"'


class _Tags(HTMLParser):
    """(tag, attributes) of every start tag, and the text, as a browser's parser reads the document."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    return parser


def test_every_text_is_escaped() -> None:
    tree = Group([
        EVIL, Text(EVIL, style="pre"), Caption(EVIL), Badge(EVIL), Problem(EVIL, EVIL, (EVIL,)),
        Table([(EVIL, Text(EVIL, style="bold"))], header=(EVIL, "v"), row_headers=True), Details(EVIL, [EVIL]),
    ], cls='a"b', id={"item": EVIL}, data={"debugger": EVIL})
    out = to_html(tree)
    assert "<script>" not in out and 'class="a"b"' not in out
    parsed = _parse(out)
    assert [t for t, _ in parsed.tags if t == "script"] == []
    assert parsed.text.count(EVIL) == 12  # each text comes back whole, as text
    assert parsed.tags[0][1]["data-debugger"] == EVIL and parsed.tags[0][1]["class"] == 'a"b'
    assert '"item": "<script>' in parsed.tags[0][1]["id"]  # a dict id as JSON, like the app's


def test_tags_and_classes_follow_the_nodes() -> None:
    out = to_html(Group([
        Group(["label ", Text("3", style="bold")], cls="ev-label", tag="span"),
        Text("Inputs", cls="ev-section-title", style="h2"),
        Table([("k", "v")], cls="ev-meta-table", row_headers=True),
    ], cls="ev-section", tag="section"))
    assert out == ('<section class="ev-section"><span class="ev-label">label <b>3</b></span>'
                   '<h2 class="ev-section-title">Inputs</h2>'
                   '<table class="ev-meta-table"><tbody><tr><th>k</th><td>v</td></tr></tbody></table></section>')


def test_a_rendered_item_holds_its_figure_and_png() -> None:
    image = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    out = to_html(render_item(Item("image", Kind.IMAGE, image)))
    tags = _parse(out).tags
    assert tags[0][1]["class"] == "ev-item ev-kind-image"
    img = next(a for t, a in tags if t == "img")
    assert img["src"].startswith("data:image/png;base64,iVBORw0KGgo") and img["class"] == "ev-picture"
    assert "Plotly.newPlot" not in out  # a picture with nothing to hover: no Plotly
    assert "40×60×3 uint8" in out  # the caption


def test_a_plain_image_is_an_img_tag() -> None:
    node = Image.from_png(png_bytes(np.zeros((4, 6, 3), np.uint8)), width=6, height=4, alt="mosaic", cls="ev-x")
    tag, attrs = _parse(to_html(node)).tags[0]
    assert tag == "img" and attrs["src"].startswith("data:image/png;base64,iVBORw0KGgo")  # PNG magic
    assert (attrs["width"], attrs["height"], attrs["alt"], attrs["class"]) == ("6", "4", "mosaic", "ev-x")


def test_a_page_opens_offline_with_plotlyjs_and_the_stylesheet() -> None:
    fig = Figure(new_figure(height=120))
    doc = page([Text("hello"), fig], title="<report>")
    assert doc.startswith("<!DOCTYPE html>") and "<title>&lt;report&gt;</title>" in doc
    assert f"plotly.js v{plotly.offline.get_plotlyjs_version()}" in doc  # the installed package's own bundle
    assert doc.count("plotly.js v") == 1
    assert ".ev-card-title {" in doc and "--ev-accent" in doc  # the app's CSS, inline
    assert not re.search(r"<(script|link)[^>]+(src|href)=", doc)  # nothing fetched from elsewhere
    assert doc.index("plotly.js v") < doc.index("Plotly.newPlot")


@pytest.mark.parametrize("mode", ["cdn", None])
def test_a_page_may_link_plotlyjs_or_leave_it_out(mode: str | None) -> None:
    doc = page(Text("x"), plotly_js=mode, css="")
    assert "plotly.js v" not in doc and "<style>" not in doc
    assert ("https://cdn.plot.ly/plotly-" in doc) == (mode == "cdn")


def test_a_whole_datapoint_view_as_a_page() -> None:
    record = make_record(inputs=(Item("image", Kind.IMAGE, np.zeros((8, 8, 3), np.uint8)),),
                         debug={"stats": (Item("", Kind.STATS, {"mean": 0.5}),)})
    doc = page(datapoint_view(record))
    classes = {c for _, a in _parse(doc).tags for c in (a.get("class") or "").split()}
    assert {"ev-datapoint-content", "ev-section", "ev-card", "ev-item-body", "ev-picture", "ev-stats"} <= classes
    assert 'data-debugger="stats"' in doc and "Debug outputs" in doc


def test_notebook_output_carries_plotlyjs_once() -> None:
    html_adapter.reset_notebook()
    try:
        first = Text("a")._repr_html_()
        second = Caption("b")._repr_html_()
    finally:
        html_adapter.reset_notebook()
    assert "plotly.js v" in first and "plotly.js v" not in second
    assert ".ev-caption {" in first and "html, body" not in first  # the view's styles, not the page's
    assert second == '<div class="ev-notebook"><div class="ev-caption">b</div></div>'


def test_not_a_node_is_refused() -> None:
    with pytest.raises(TypeError, match="not a view node"):
        to_html(42)  # type: ignore[arg-type]
