"""Attention cards: a click on the overlay image picks the query position, and only that card is re-drawn.

The display gives the overlay graph the id ``ids.graph(item_key, "attention-image")`` (through
``RenderContext.graph_id``); ``MATCH`` ties each graph to its own item container, so clicking one attention card
leaves every other card alone. The item key names the item (``["debug", "<debugger>", "<item key>"]``, see
:mod:`eval_viewer.display.datapoint`), so the freshly read record gives back that very item, and a record without
it says so (a :class:`~eval_viewer.errors.NotFoundError` shown in the card) rather than drawing another one.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import MATCH, Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import guarded
from eval_viewer.app.state import parse_query, resolve
from eval_viewer.app.views import find_item, input_image, render_keyed
from eval_viewer.backend import LogStore
from eval_viewer.display import attention_query_from_click, parse_attention

__all__ = ["register"]


def register(app: dash.Dash, store: LogStore) -> None:
    @app.callback(
        Output(ids.item_body(MATCH), "children"),
        Input(ids.graph(MATCH, ids.ATTENTION_ROLE), "clickData"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    @guarded(lambda box: box)
    def pick_query(click: dict[str, Any] | None, search: str | None) -> Any:
        points = (click or {}).get("points") or []
        if not points or points[0].get("x") is None or points[0].get("y") is None:
            raise PreventUpdate
        key = ctx.triggered_id["item"]
        resolved = resolve(store, parse_query(search), strict=True)
        state = resolved.state
        if state.idx is None:
            raise PreventUpdate
        record = store.datapoint(state.pass_key, state.idx)
        item = find_item(record, key)
        image = input_image(record)
        if image is None:  # the overlay (the only clickable graph) is drawn over the input image
            raise PreventUpdate
        grid = parse_attention(item.value, image.shape[:2]).grid  # the key grid, given or inferred as the display did
        if grid is None:
            raise PreventUpdate
        query = attention_query_from_click(float(points[0]["x"]), float(points[0]["y"]), image.shape[:2], grid)
        return render_keyed(item, key, image, attention_query=query)
