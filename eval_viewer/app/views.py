"""The datapoint view in the app: the display's neutral view (:mod:`eval_viewer.display.datapoint`) with the app's ids,
drawn as Dash components.

The view itself (scores, the four sections, debugger cards, item keys that name their item) is composed in the
display, so a notebook and a report show exactly what the app shows; this module only adds the pattern-matching ids
(:func:`ids.item_body`, :func:`ids.graph`) that let one item be re-drawn in place, e.g. the attention card for a query
the user clicked, and the fold ids (:func:`ids.item_fold`, :func:`ids.item_toggle`) of the debug items, which the app
draws only while the user has them open, and hands the tree to the Dash adapter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from dash.development.base_component import Component

from eval_viewer.app import ids
from eval_viewer.app.dash_view import to_dash
from eval_viewer.app.state import AttentionChoice
from eval_viewer.backend import DatapointRecord, Item
from eval_viewer.display import datapoint
from eval_viewer.display.attention import HEAD_ROLE
from eval_viewer.display.datapoint import SECTION_TITLES, ViewIds, find_item, input_image, item_key

__all__ = ["datapoint_view", "render_keyed", "open_item", "find_item", "input_image", "item_key", "SECTION_TITLES",
           "VIEW_IDS"]


def _control(key: str, role: str) -> dict[str, Any]:
    """The id of an interactive part of item ``key``: a head picker's chip, or a graph."""
    if role.startswith(HEAD_ROLE):
        return ids.head_choice(key, role[len(HEAD_ROLE):])
    return ids.graph(key, role)


VIEW_IDS = ViewIds(body=ids.item_body, graph=_control, fold=ids.item_fold, toggle=ids.item_toggle,
                   badges=ids.card_badges)
"""The ids the app gives an item's container, its interactive parts, for a debug item its fold, and a debug card's
health badges."""


def _choices(attention: AttentionChoice | None) -> dict[str, tuple[int | None, int | None]] | None:
    return {attention.key: (attention.query, attention.head)} if attention is not None else None


def datapoint_view(record: DatapointRecord, metric: str | None, higher_is_better: Mapping[str, bool],
                   opened: Collection[str] | None = None, health: Sequence[Any] | None = None,
                   attention: AttentionChoice | None = None) -> Component:
    """The whole datapoint view below the navigation bar. ``opened``: the keys of the debug items drawn (those the
    user has open; the others show their head only); None: every item drawn. ``attention``: the query and head
    chosen for one attention item (the URL's)."""
    return to_dash(datapoint.datapoint_view(record, metric, higher_is_better, ids=VIEW_IDS, opened=opened,
                                            health=health, choices=_choices(attention)), lean=True)


def open_item(record: DatapointRecord, key: str, attention: AttentionChoice | None = None) -> Component:
    """What goes inside :func:`ids.item_fold` ``(key)`` when the user opens that item: its body, drawn now.
    :class:`~eval_viewer.errors.NotFoundError` when ``record`` has no item ``key``."""
    item = find_item(record, key)
    return to_dash(datapoint.item_body(item, key, input_image(record), ids=VIEW_IDS, record=record,
                                       choices=_choices(attention)), lean=True)


def render_keyed(item: Item, key: str, image: np.ndarray | None, attention_query: int | None = None,
                 attention_head: int | None = None, record: DatapointRecord | None = None) -> Component:
    """What goes inside :func:`ids.item_body` ``(key)``: the rendered item, e.g. re-drawn for a newly chosen query
    or head."""
    return to_dash(datapoint.render_keyed(item, key, image, attention_query, ids=VIEW_IDS, record=record,
                                          attention_head=attention_head), lean=True)
