"""Every component id of the app, in one place.

Callbacks, layout and tests import ids from here and never spell one inline, so renaming an id is a one-line change and
a typo is an ``AttributeError`` at import time rather than a callback that silently never fires. Static components get
plain string constants; components made per item (the cards of the datapoint view) get small functions returning
pattern-matching dicts, with the matching ``*_TYPE`` constant for ``MATCH``/``ALL`` selectors.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "URL",
    "SELECTION",
    "RESCAN",
    "LOG_VERSION",
    "NOTICE",
    "RUN",
    "PASS",
    "METRIC",
    "OVERVIEW_VIEW",
    "DATAPOINT_VIEW",
    "RUNS_TABLE",
    "HISTORY",
    "DISTRIBUTION",
    "SCORE_MAP",
    "TABLE",
    "TABLE_CAPTION",
    "PREV",
    "NEXT",
    "BACK",
    "POSITION",
    "DATAPOINT_BODY",
    "INDEX_POLL",
    "ITEM_BODY_TYPE",
    "GRAPH_TYPE",
    "ATTENTION_ROLE",
    "item_body",
    "graph",
]

# State: the URL is the single source of truth; SELECTION mirrors its run/pass/metric part so the overview only
# re-renders when one of those changes, not on every step through the datapoints.
URL = "ev-url"
SELECTION = "ev-selection"
NOTICE = "ev-notice"
# Live logs: RESCAN ticks; LOG_VERSION holds the store's snapshot version, which changes only when a run, a pass or
# a page appears or changes.
RESCAN = "ev-rescan"
LOG_VERSION = "ev-log-version"

# Selectors in the header.
RUN = "ev-run"
PASS = "ev-pass"
"""The pass selector: every epoch of a run and its test pass (values ``"val:9"``, ``"test"``)."""
METRIC = "ev-metric"

# The two views; one is hidden at any time.
OVERVIEW_VIEW = "ev-overview"
DATAPOINT_VIEW = "ev-datapoint"

# Overview panels.
RUNS_TABLE = "ev-runs"
HISTORY = "ev-history"
DISTRIBUTION = "ev-distribution"
SCORE_MAP = "ev-score-map"
TABLE = "ev-table"
TABLE_CAPTION = "ev-table-caption"

# Datapoint view.
PREV = "ev-prev"
NEXT = "ev-next"
BACK = "ev-back"
POSITION = "ev-position"
DATAPOINT_BODY = "ev-datapoint-body"
INDEX_POLL = "ev-index-poll"
"""Ticks while the shown datapoint's pass is still being indexed, so its view is re-drawn once it is complete."""

# Pattern-matching ids of the per-item parts of the datapoint view.
ITEM_BODY_TYPE = "ev-item-body"
GRAPH_TYPE = "ev-item-graph"
ATTENTION_ROLE = "attention-image"
"""The role the display gives the attention overlay image; its clickData picks the query position."""


def item_body(key: Any) -> dict[str, Any]:
    """The container of one rendered item, re-rendered in place (e.g. when an attention query is picked).

    ``key`` is an item key (``"debug.2.0"``) or a wildcard (``MATCH``) in a callback's dependency."""
    return {"type": ITEM_BODY_TYPE, "item": key}


def graph(key: Any, role: str) -> dict[str, Any]:
    """An interactive graph inside the item ``key``; ``role`` says what clicking it means."""
    return {"type": GRAPH_TYPE, "item": key, "role": role}
