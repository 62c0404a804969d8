"""The Dash adapter and the app's datapoint view: classes, tags and ids as the stylesheet and callbacks expect them,
and the same markup as the static-HTML adapter writes."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from typing import Any

import numpy as np
from dash import dcc, html
from dash.development.base_component import Component

from eval_viewer.app import ids
from eval_viewer.app.dash_view import to_dash
from eval_viewer.app.views import VIEW_IDS, datapoint_view, find_item, render_keyed
from eval_viewer.backend import model
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
    item_key,
    to_html,
)
from eval_viewer.display import datapoint as neutral
from eval_viewer.display.figures import GRAPH_CONFIG, new_figure
from eval_viewer.log_format import Kind

RNG = np.random.default_rng(0)
IMAGE = (RNG.random((32, 32, 3)) * 255).astype(np.uint8)


def _record() -> model.DatapointRecord:
    """A record of every section (built with whichever pass field the backend has: it is being renamed)."""
    names = {f.name for f in dataclasses.fields(model.DatapointRecord)}
    where: dict[str, Any] = {"pass_key": model.PassKey("r", "val", 1)} if "pass_key" in names else {"run": "r",
                                                                                                    "epoch": 1}
    attention = {"attention": RNG.random((2, 16, 16)).astype(np.float32), "grid": (4, 4)}
    return model.DatapointRecord(
        idx=3, **where, scores={"iou": 0.5}, inputs=(Item("image", Kind.IMAGE, IMAGE),),
        labels=(Item("cls", Kind.SCALAR, 2),), predictions=(Item("cls", Kind.SCALAR, 1),),
        meta_info={"source": "a", "boxes": np.zeros((2, 4))},
        debug={"attn.block": (Item("weights", Kind.ATTENTION, attention),), "stats": (Item("", Kind.STATS, {"m": 1}),)},
    )


def _walk(node: Any) -> list[Any]:
    out = [node]
    children = getattr(node, "children", None) if isinstance(node, Component) else None
    for child in children if isinstance(children, (list, tuple)) else [children] if children is not None else []:
        out.extend(_walk(child))
    return out


def test_each_node_becomes_its_component() -> None:
    fig = new_figure(height=120)
    assert isinstance(to_dash(Group(["x"], tag="section")), html.Section)
    span = to_dash(Group(["label ", Text("3", style="bold")], cls="ev-label", tag="span"))
    assert isinstance(span, html.Span) and span.className == "ev-label"
    assert span.children[0] == "label " and isinstance(span.children[1], html.B)
    pre = to_dash(Text("a  b", cls="ev-text", style="pre"))
    assert isinstance(pre, html.Pre) and pre.style["whiteSpace"] == "pre-wrap" and pre.className == "ev-text"
    assert isinstance(to_dash(Text("Inputs", style="h2")), html.H2)
    assert to_dash(Caption("c")).className == "ev-caption" and to_dash(Badge("mask")).className == "ev-kind-tag"

    graph = to_dash(Figure(fig, config=GRAPH_CONFIG))
    assert isinstance(graph, dcc.Graph) and graph.figure is fig and graph.className == "ev-figure"
    assert graph.style == {"height": "120px"} and graph.config == GRAPH_CONFIG
    assert getattr(graph, "id", None) is None  # no id unless the app listens to it
    assert to_dash(Figure(fig, id={"type": "g", "item": "k"})).id == {"type": "g", "item": "k"}

    img = to_dash(Image("data:image/png;base64,AA", width=6, alt="m", cls="ev-x"))
    assert isinstance(img, html.Img) and (img.src, img.width, img.alt, img.className) == (
        "data:image/png;base64,AA", 6, "m", "ev-x")

    table = to_dash(Table([("k", "v")], header=("key", "value"), cls="ev-meta-table", row_headers=True))
    head, body = table.children
    assert isinstance(head, html.Thead) and [th.children for th in head.children.children] == ["key", "value"]
    assert [type(c) for c in body.children[0].children] == [html.Th, html.Td]

    details = to_dash(Details("more", [Text("x")]))
    assert isinstance(details.children[0], html.Summary) and details.className == "ev-details"

    box = to_dash(Problem("Could not", "Boom", ("one",), cls="ev-error ev-problems"))
    assert box.className == "ev-error ev-problems"
    assert [c.className for c in box.children[:2]] == ["ev-error-title", "ev-error-message"]
    assert isinstance(box.children[2], html.Ul)


def test_the_datapoint_view_keeps_classes_ids_and_attributes() -> None:
    record = _record()
    view = datapoint_view(record, "iou", {"iou": True})
    nodes = _walk(view)
    cards = [c for c in nodes if "ev-card" in (getattr(c, "className", None) or "").split()]
    assert [c.to_plotly_json()["props"]["data-debugger"] for c in cards] == ["attn.block", "stats"]
    assert [type(c.children[0]) for c in cards] == [html.H3, html.H3]
    sections = [c for c in nodes if isinstance(c, html.Section)]
    assert [s.children[0].children for s in sections] == ["Inputs", "Labels", "Meta info", "Debug outputs"]

    key = item_key("debug", "attn.block", "weights")
    bodies = {c.id["item"]: c for c in nodes if isinstance(getattr(c, "id", None), dict)
              and c.id["type"] == ids.ITEM_BODY_TYPE}
    assert set(bodies) == {item_key("inputs", "", "image"), item_key("meta", "", "boxes"), key,
                           item_key("debug", "stats", "")}
    assert bodies[key].className == "ev-item-body"
    graph_ids = [c.id for c in nodes if isinstance(c, dcc.Graph) and getattr(c, "id", None) is not None]
    assert graph_ids == [ids.graph(key, ids.ATTENTION_ROLE)]
    # What the attention callback does after a click: find the item again by its key and re-draw it alone.
    redrawn = render_keyed(find_item(record, key), key, IMAGE, attention_query=5)
    assert "query 5" in str(redrawn.to_plotly_json())


class _Classes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.classes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class")
        if cls and "ev-" in cls:
            self.classes.append(cls)


def test_dash_and_static_html_write_the_same_markup() -> None:
    tree = neutral.datapoint_view(_record(), "iou", {"iou": True}, ids=VIEW_IDS)
    dash_classes = [c.className for c in _walk(to_dash(tree))
                    if isinstance(c, Component) and "ev-" in (getattr(c, "className", None) or "")]
    parser = _Classes()
    parser.feed(to_html(tree))
    assert dash_classes == parser.classes and len(dash_classes) > 40



def test_runs_table_counts_snapshots_apart_from_debug_passes(example_dir, tmp_path) -> None:  # noqa: ANN001
    """The example's trainer_run: 10 epochs, some captured, and 3 training snapshot steps counted on their own (a
    snapshot is not a validated epoch with debug outputs)."""
    from eval_viewer.app.callbacks.overview import runs_table
    from eval_viewer.backend import LogStore

    def cells(row: Any) -> list[str]:
        return [c.children if isinstance(c.children, str) else c.children.children for c in row.children]

    with LogStore(example_dir, cache_dir=tmp_path / "cache", rescan_s=0) as store:
        table, _ = runs_table(store, "miou", None)
        captured = sum(p.has_debug for p in store.run("trainer_run").passes if p.key.split == "val")
    head = [th.children for th in table.children[0].children.children]
    rows = {cells(r)[0]: dict(zip(head, cells(r))) for r in table.children[1].children}
    assert (rows["trainer_run"]["epochs"], rows["trainer_run"]["snapshots"]) == ("10", "3")
    assert rows["trainer_run"]["with debug"] == str(captured) and captured < 10
    assert rows["evaluator_run"]["snapshots"] == "—"
