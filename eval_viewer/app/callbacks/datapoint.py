"""Draw the datapoint the URL names: its scores and the four sections (Inputs, Labels, Meta info, Debug outputs).

Views come from :class:`~eval_viewer.app.rendered.RenderedViews`, which keeps recent ones and draws the neighbours in
the ranking ahead of time, so ← / → answer from memory.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output

from eval_viewer.app import ids
from eval_viewer.app.boundary import guarded
from eval_viewer.app.rendered import RenderedViews
from eval_viewer.app.state import parse_query, position, resolve, with_idx
from eval_viewer.backend import LogStore

__all__ = ["register"]


def register(app: dash.Dash, store: LogStore, *, prefetch: bool = True) -> None:
    views = RenderedViews(store, prefetch=prefetch)

    @app.callback(Output(ids.DATAPOINT_BODY, "children"), Input(ids.URL, "search"))
    @guarded(lambda box: box)
    def render(search: str | None) -> Any:
        """Strict: a link naming a datapoint that does not exist says so here instead of showing another one."""
        state = parse_query(search)
        if state.idx is None:
            return []  # the overview is shown; drop the last datapoint so it never flashes before the next one
        resolved = resolve(store, state, strict=True)
        state = resolved.state
        view = views.get(state)
        where = position(resolved.scores, state.metric, state.idx)
        views.prefetch(with_idx(state, i) for i in (where.next_idx, where.prev_idx) if i is not None)
        return view
