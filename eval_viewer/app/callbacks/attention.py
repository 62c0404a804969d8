"""Attention items: a click on the overlay picks the query, a chip of the head picker the head laid over the image;
only that item is re-drawn, and the choice goes into the URL (``attn=<head>,<query>,<item key>``) so a reload or a
shared link reopens on the same head and query.

The display gives the overlay the id ``ids.graph(item_key, "attention-image")`` and each chip
``ids.head_choice(item_key, head)`` (through ``RenderContext.id_for``). Both are listened to with ``ALL`` (an
output without a wildcard, the URL, rules out ``MATCH``): the triggering id names the item, its key (``["debug",
"<debugger>", "<item key>"]``, see :mod:`eval_viewer.display.datapoint`) finds that very item in the freshly read
record, and only its container gets a new drawing. The datapoint view's callback sees that only the choice changed
in the URL and draws nothing (``ids.DATAPOINT_DRAWN``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import guarded
from eval_viewer.app.state import AttentionChoice, parse_query, resolve, to_query
from eval_viewer.app.views import find_item, input_image, render_keyed
from eval_viewer.backend import LogStore
from eval_viewer.display import attention_query_from_click, parse_attention

__all__ = ["register", "choose"]


def choose(before: AttentionChoice | None, key: str, *, head: str | None = None,
           query: int | None = None) -> AttentionChoice:
    """The choice for item ``key`` after a chip (``head``: ``"mean"`` or a number) or a click (``query``): the
    URL's choice for that item, else none, with the one thing changed. A new head keeps the query."""
    current = before if before is not None and before.key == key else AttentionChoice(key)
    if head is not None:
        return replace(current, head=None if head == "mean" else int(head))
    return replace(current, query=query)


def register(app: dash.Dash, store: LogStore) -> None:
    @app.callback(
        Output(ids.item_body(ALL), "children"),
        Output(ids.URL, "search", allow_duplicate=True),
        Input(ids.graph(ALL, ids.ATTENTION_ROLE), "clickData"),
        Input(ids.head_choice(ALL, ALL), "n_clicks"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    @guarded(lambda box: (no_update, no_update))
    def pick(_clicks: list[Any], _chips: list[Any], search: str | None) -> tuple[Any, Any]:
        trigger = ctx.triggered_id
        fired = ctx.triggered[0]["value"] if ctx.triggered else None
        if not isinstance(trigger, dict) or not fired:
            raise PreventUpdate  # the overlays and chips of a newly drawn view, not a click
        key = trigger["item"]
        state = resolve(store, parse_query(search), strict=True).state
        if state.idx is None:
            raise PreventUpdate
        record = store.datapoint(state.pass_key, state.idx)
        item = find_item(record, key)
        image = input_image(record)
        if trigger["type"] == ids.HEAD_CHOICE_TYPE:
            choice = choose(state.attn, key, head=trigger["head"])
        else:
            points = fired.get("points") or []
            if image is None or not points or points[0].get("x") is None or points[0].get("y") is None:
                raise PreventUpdate  # the overlay (the only clickable graph) is drawn over the input image
            grid = parse_attention(item.value, image.shape[:2]).grid  # the key grid the display drew on
            if grid is None:
                raise PreventUpdate
            query = attention_query_from_click(float(points[0]["x"]), float(points[0]["y"]), image.shape[:2], grid)
            choice = choose(state.attn, key, query=query)
        bodies = [no_update if out["id"]["item"] != key else
                  render_keyed(item, key, image, choice.query, choice.head, record)
                  for out in ctx.outputs_list[0]]
        return bodies, to_query(replace(state, attn=choice))
