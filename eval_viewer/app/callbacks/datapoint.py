"""Draw the datapoint the URL names: its scores and the four sections (Inputs, Labels, Meta info, Debug outputs).

Views come from :class:`~eval_viewer.app.rendered.RenderedViews`, which keeps recent ones and draws the neighbours in
the ranking ahead of time, so ← / → answer from memory.

Debug items are drawn only while open: the browser's time to mount a view grows with every figure and component in
it (a dozen debug items cost it far more than the server spends), so a closed item shows its head only. A click on
a head toggles its key in ``OPEN_ITEMS`` (a clientside callback, ``assets/fold.js``; the store lives in the
browser's local storage, so what a user opened stays open from datapoint to datapoint and across reloads), and
:func:`register`'s ``fold`` draws or empties exactly the items whose state changed. Keys name items (debugger name
and item key, :func:`~eval_viewer.display.datapoint.item_key`), so the choice carries over to every pass and run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import dash
from dash import ALL, ClientsideFunction, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import error_box, guarded
from eval_viewer.app.rendered import RenderedViews
from eval_viewer.app.callbacks.table import table_position
from eval_viewer.app.state import parse_query, resolve, to_query, with_idx
from eval_viewer.app.views import open_item
from eval_viewer.backend import LogStore
from eval_viewer.errors import ViewerError

__all__ = ["register", "opened_keys"]

OPEN = "ev-fold ev-open"
FOLDED = "ev-fold"


def opened_keys(data: Any) -> frozenset[str]:
    """The item keys ``OPEN_ITEMS`` holds (a list of strings; anything else, e.g. an old or edited local storage
    value, counts as nothing open)."""
    if not isinstance(data, list):
        return frozenset()
    return frozenset(key for key in data if isinstance(key, str))


def register(app: dash.Dash, store: LogStore, *, prefetch: bool = True) -> None:
    views = RenderedViews(store, prefetch=prefetch)

    @app.callback(
        Output(ids.DATAPOINT_BODY, "children"),
        Output(ids.INDEX_POLL, "disabled"),
        Output(ids.DATAPOINT_DRAWN, "data"),
        Input(ids.URL, "search"),
        Input(ids.INDEX_POLL, "n_intervals"),
        State(ids.TABLE_MODEL, "data"),
        State(ids.OPEN_ITEMS, "data"),
        State(ids.DATAPOINT_DRAWN, "data"),
    )
    @guarded(lambda box: (box, True, None))
    def render(search: str | None, _polls: int | None, model: dict[str, Any] | None, open_data: Any,
               drawn: str | None) -> Any:
        """Strict: a link naming a datapoint that does not exist says so here instead of showing another one.

        A pass whose pages are still being indexed is drawn at once with what there is (the view says so), and
        ``INDEX_POLL`` re-draws it when the index is complete: the request never waits for indexing. A URL that
        only chose another attention head or query (callbacks/attention.py re-drew that item) draws nothing."""
        state = parse_query(search)
        if state.idx is None or state.vs is not None:  # the overview, or the paired view (callbacks/compare.py)
            return [], True, None  # the overview is shown; drop the last datapoint so it never flashes before the next
        resolved = resolve(store, state, strict=True)
        state = resolved.state
        shown = to_query(replace(state, attn=None))
        if ctx.triggered_id == ids.URL and shown == drawn:
            raise PreventUpdate
        status = store.debug_status(state.pass_key)
        indexing = status is not None and not status.ready
        if ctx.triggered_id == ids.INDEX_POLL and indexing:
            raise PreventUpdate  # nothing new yet: keep what is shown, ask again at the next tick
        opened = opened_keys(open_data)
        view = views.get(state, opened)
        where = table_position(store, resolved, model)
        views.prefetch((with_idx(state, i) for i in (where.next_idx, where.prev_idx) if i is not None), opened)
        return view, not indexing, shown

    app.clientside_callback(
        ClientsideFunction(namespace="evalViewer", function_name="toggleItem"),
        Output(ids.OPEN_ITEMS, "data"),
        Input(ids.item_toggle(ALL), "n_clicks"),
        State(ids.OPEN_ITEMS, "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.item_fold(ALL), "children"),
        Output(ids.item_fold(ALL), "className"),
        Input(ids.OPEN_ITEMS, "data"),
        State(ids.item_fold(ALL), "className"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    def fold(open_data: Any, classes: list[str | None], search: str | None) -> tuple[list[Any], list[Any]]:
        """Draw the items just opened and empty those just folded; the others are left as they are."""
        folds = [out["id"]["item"] for out in ctx.outputs_list[0]]
        opened = opened_keys(open_data)
        changed = [i for i, key in enumerate(folds) if (key in opened) != (classes[i] == OPEN)]
        if not changed:
            raise PreventUpdate
        children: list[Any] = [no_update] * len(folds)
        class_names: list[Any] = [no_update] * len(folds)
        record, attention = None, None
        for i in changed:
            key = folds[i]
            class_names[i] = OPEN if key in opened else FOLDED
            if key not in opened:
                children[i] = []
                continue
            try:
                if record is None:
                    state = resolve(store, parse_query(search), strict=True).state
                    if state.idx is None:
                        raise PreventUpdate
                    record, attention = store.datapoint(state.pass_key, state.idx), state.attn
                children[i] = open_item(record, key, attention)
            except ViewerError as err:  # this item alone says what went wrong; the others still open
                children[i] = error_box(str(err), title="This item could not be drawn")
        return children, class_names
