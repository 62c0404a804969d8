"""The datapoint view: scores, then Inputs, Labels (with the predictions beside them), Meta info and Debug outputs.

Each saved value goes through the display registry (:func:`eval_viewer.display.render_item`), with the datapoint's
input image in the render context so masks, heatmaps and attention are drawn over it. Every rendered item sits in a
container with a pattern-matching id (:func:`ids.item_body`) so one item can be re-drawn in place, e.g. the attention
card for a query the user clicked. Item keys are positions (``"debug.2.0"``), not names, so any debugger name is safe
in an id and :func:`find_item` finds the item again in a freshly read record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from dash import html
from dash.development.base_component import Component

from eval_viewer.app import ids
from eval_viewer.app.dash_view import to_dash
from eval_viewer.backend import DatapointRecord, Item, infer_kind
from eval_viewer.display import RenderContext, image_to_rgb, pair_items, render_comparison, render_item
from eval_viewer.log_format import Kind

__all__ = ["datapoint_view", "find_item", "render_context", "render_keyed", "input_image", "SECTION_TITLES"]

SECTION_TITLES = ("Inputs", "Labels", "Meta info", "Debug outputs")
WIDE_KINDS = frozenset({Kind.FEATURE_MAP, Kind.ATTENTION, Kind.HEATMAP, Kind.IMAGE, Kind.MASK, Kind.DEPTH,
                        Kind.POINT_CLOUD})
"""Kinds drawn as several figures side by side: they take a whole line, and so does their debugger's card; the small
kinds (stats, series, scalars, text) flow beside each other."""


def input_image(record: DatapointRecord) -> np.ndarray | None:
    """The first input that is an image, as HxWx3 uint8: the backdrop for every overlay of this datapoint."""
    for item in record.inputs:
        if item.kind == Kind.IMAGE:
            try:
                return image_to_rgb(item.value)
            except (TypeError, ValueError):
                return None
    return None


def render_context(image: np.ndarray | None, key: str, attention_query: int | None = None) -> RenderContext:
    """The context of item ``key``: the input image for overlays and ids for its interactive graphs."""
    return RenderContext(image=image, attention_query=attention_query, graph_id=lambda role: ids.graph(key, role))


def render_keyed(item: Item, key: str, image: np.ndarray | None, attention_query: int | None = None) -> Component:
    """What goes inside :func:`ids.item_body` ``(key)``: the rendered item (re-rendered with a new query later)."""
    return to_dash(render_item(item, render_context(image, key, attention_query)))


def _item(item: Item, key: str, image: np.ndarray | None) -> html.Div:
    """An item under a small head: its key (none for a debugger's whole output) and its semantic kind."""
    head = [html.Span(item.key, className="ev-item-key")] if item.key else []
    return html.Div(
        [
            html.Div([*head, html.Span(item.kind, className="ev-kind-tag")], className="ev-item-head"),
            html.Div(render_keyed(item, key, image), id=ids.item_body(key), className="ev-item-body"),
        ],
        className="ev-item-box ev-item-wide" if item.kind in WIDE_KINDS else "ev-item-box ev-item-small",
    )


def find_item(record: DatapointRecord, key: str) -> Item:
    """The item that :func:`datapoint_view` drew under ``key`` (``"inputs.0"``, ``"debug.2.1"``...)."""
    parts = key.split(".")
    if parts[0] == "meta":
        rest = [(k, v) for k, v in record.meta_info.items() if not _is_scalar(v)]
        name, value = rest[int(parts[1])]
        return Item(key=name, kind=infer_kind(name, value), value=value)
    if parts[0] == "debug":
        items = list(record.debug.values())[int(parts[1])]
        return items[int(parts[2])]
    section: Sequence[Item] = getattr(record, parts[0])
    return section[int(parts[1])]


def _fmt(value: float) -> str:
    return "NaN" if not math.isfinite(value) else f"{value:.4g}"


def _scores(record: DatapointRecord, metric: str | None, higher_is_better: Mapping[str, bool]) -> html.Div:
    chips = []
    for name, value in record.scores.items():
        arrow = "↑" if higher_is_better.get(name, True) else "↓"
        classes = "ev-score" + (" ev-score-chosen" if name == metric else "") + (
            " ev-score-nan" if not math.isfinite(value) else "")
        chips.append(html.Div([html.Span(f"{name} {arrow}", className="ev-score-name"),
                               html.Span(_fmt(value), className="ev-score-value")], className=classes))
    return html.Div(chips, className="ev-scores")


def _section(title: str, children: list[Any], empty: str) -> html.Section:
    body = children if children else [html.Div(empty, className="ev-empty")]
    slug = title.lower().replace(" ", "-")
    return html.Section([html.H2(title, className="ev-section-title"), html.Div(body, className="ev-section-body")],
                        className=f"ev-section ev-section-{slug}")


def _labels(record: DatapointRecord, image: np.ndarray | None) -> list[Any]:
    """Each label beside its prediction (masks overlaid on the input image with an error map), via the display's
    pairing; a label or prediction without a partner is shown alone."""
    rows = []
    for n, (label, prediction) in enumerate(pair_items(record.labels, record.predictions)):
        title = " · ".join(
            f"{side} {item.key}".strip() for side, item in (("label", label), ("prediction", prediction)) if item
        )
        kinds = {item.kind for item in (label, prediction) if item is not None}
        rows.append(html.Div(
            [html.Div([html.Span(title, className="ev-item-key"), html.Span(" / ".join(sorted(kinds)),
                                                                               className="ev-kind-tag")],
                      className="ev-item-head"),
             to_dash(render_comparison(label, prediction, render_context(image, f"labels.{n}")))],
            className="ev-item-box ev-pair",
        ))
    return rows


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float, np.generic))


def _meta(record: DatapointRecord, image: np.ndarray | None) -> list[Any]:
    """Scalars as a key/value table; arrays and nested values through the display registry."""
    scalars = {k: v for k, v in record.meta_info.items() if _is_scalar(v)}
    rest = {k: v for k, v in record.meta_info.items() if not _is_scalar(v)}
    parts: list[Any] = []
    if scalars:
        parts.append(html.Table(html.Tbody([html.Tr([html.Th(k), html.Td(str(v))]) for k, v in scalars.items()]),
                                className="ev-meta-table"))
    for n, (key, value) in enumerate(rest.items()):
        item = Item(key=key, kind=infer_kind(key, value), value=value)
        parts.append(_item(item, f"meta.{n}", image))
    return parts


def _debug(record: DatapointRecord, image: np.ndarray | None) -> list[Any]:
    """One card per debugger, titled with its name, holding every item it saved."""
    cards = []
    for d, (name, items) in enumerate(record.debug.items()):
        body = [_item(item, f"debug.{d}.{i}", image) for i, item in enumerate(items)]
        wide = any(item.kind in WIDE_KINDS for item in items)
        cards.append(html.Div([html.H3(name, className="ev-card-title"),
                               html.Div(body or [html.Div("saved nothing", className="ev-empty")],
                                        className="ev-card-body")],
                              className="ev-card ev-card-wide" if wide else "ev-card", **{"data-debugger": name}))
    return cards


def datapoint_view(record: DatapointRecord, metric: str | None, higher_is_better: Mapping[str, bool]) -> html.Div:
    """The whole datapoint view below the navigation bar."""
    image = input_image(record)
    problems = [html.Div([html.Div("Some of this datapoint could not be read", className="ev-error-title"),
                          html.Ul([html.Li(p) for p in record.problems])], className="ev-error ev-problems")
                ] if record.problems else []
    inputs = [_item(item, f"inputs.{i}", image) for i, item in enumerate(record.inputs)]
    return html.Div(
        [
            _scores(record, metric, higher_is_better),
            *problems,
            html.Div(
                [
                    _section("Inputs", inputs, "No inputs were saved for this datapoint."),
                    _section("Labels", _labels(record, image),
                             "No labels or predictions were saved for this datapoint."),
                    _section("Meta info", _meta(record, image), "No meta info was saved for this datapoint."),
                    _section("Debug outputs", _debug(record, image),
                             "No debugger saved anything for this datapoint in this epoch."),
                ],
                className="ev-sections",
            ),
        ],
        className="ev-datapoint-content",
    )
