"""Draw the datapoint the URL names: its scores and the four sections (Inputs, Labels, Meta info, Debug outputs).

Views come from :class:`~eval_viewer.app.rendered.RenderedViews`, which keeps recent ones and draws the neighbours in
the ranking ahead of time, so ← / → answer from memory.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import guarded
from eval_viewer.app.rendered import RenderedViews
from eval_viewer.app.callbacks.table import table_position
from eval_viewer.app.state import parse_query, resolve, with_idx
from eval_viewer.backend import LogStore

__all__ = ["register"]


def register(app: dash.Dash, store: LogStore, *, prefetch: bool = True) -> None:
    views = RenderedViews(store, prefetch=prefetch)

    @app.callback(
        Output(ids.DATAPOINT_BODY, "children"),
        Output(ids.INDEX_POLL, "disabled"),
        Input(ids.URL, "search"),
        Input(ids.INDEX_POLL, "n_intervals"),
        State(ids.TABLE_MODEL, "data"),
    )
    @guarded(lambda box: (box, True))
    def render(search: str | None, _polls: int | None, model: dict[str, Any] | None) -> Any:
        """Strict: a link naming a datapoint that does not exist says so here instead of showing another one.

        A pass whose pages are still being indexed is drawn at once with what there is (the view says so), and
        ``INDEX_POLL`` re-draws it when the index is complete: the request never waits for indexing."""
        state = parse_query(search)
        if state.idx is None or state.vs is not None:  # the overview, or the paired view (callbacks/compare.py)
            return [], True  # the overview is shown; drop the last datapoint so it never flashes before the next one
        resolved = resolve(store, state, strict=True)
        state = resolved.state
        status = store.debug_status(state.pass_key)
        indexing = status is not None and not status.ready
        if ctx.triggered_id == ids.INDEX_POLL and indexing:
            raise PreventUpdate  # nothing new yet: keep what is shown, ask again at the next tick
        view = views.get(state)
        where = table_position(store, resolved, model)
        views.prefetch(with_idx(state, i) for i in (where.next_idx, where.prev_idx) if i is not None)
        return view, not indexing
