"""Callbacks, one module per feature, each with ``register(app, store)``.

``navigation`` owns the URL (selectors, ←/→, which view is shown); ``overview`` and ``table`` draw the run-level
panels from the selection; ``datapoint`` draws one datapoint; ``attention`` re-draws an attention card for a picked
query. Callbacks are thin: parse the state, ask the store, ask the display registry, return.
"""

from __future__ import annotations

import dash

from eval_viewer.app.callbacks import attention, compare, datapoint, health, navigation, overview, table
from eval_viewer.app.callbacks import training
from eval_viewer.backend import LogStore

__all__ = ["register_all"]


def register_all(app: dash.Dash, store: LogStore, *, prefetch: bool = True) -> None:
    """Register every feature's callbacks on ``app``; ``prefetch``: draw the neighbours of an opened datapoint ahead."""
    for feature in (navigation, overview, table, attention, compare, health, training):
        feature.register(app, store)
    datapoint.register(app, store, prefetch=prefetch)
