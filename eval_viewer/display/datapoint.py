"""The whole datapoint view: scores, then Inputs, Labels (with the predictions beside them), Meta info, Debug outputs.

One neutral tree (:mod:`eval_viewer.display.view`) that the app, a notebook and a report all show. Each saved value
goes through the display registry (:func:`~eval_viewer.display.registry.render_item`), with the datapoint's input
image in the render context so masks, heatmaps and attention are drawn over it.

Every item has a key that *names* it: ``item_key(section, name, key)``, a JSON list such as
``["debug", "<debugger name>", "<item key>"]``, ``["inputs", "", "image"]``, ``["meta", "", "<meta key>"]`` or
``["labels", "", "<label key>"]``. :func:`find_item` resolves a key in any record, so the same item is found again in
another epoch or run even when the set of debuggers differs (a position such as "the 3rd debugger" would name
another one). The app puts the key in its pattern-matching ids (JSON is a plain string, safe whatever the names hold)
through :class:`ViewIds`; without ids (a notebook, a report) nothing is listening and no id is written.

CSS classes: ``ev-datapoint-content``, ``ev-scores`` / ``ev-score`` (``ev-score-chosen``, ``ev-score-nan``) /
``ev-score-name`` / ``ev-score-value``, ``ev-problems``, ``ev-sections``, ``ev-section ev-section-<slug>`` /
``ev-section-title`` / ``ev-section-body``, ``ev-empty``, ``ev-item-box`` (``ev-item-wide``, ``ev-item-small``,
``ev-pair``) / ``ev-item-head`` / ``ev-item-key`` / ``ev-kind-tag`` / ``ev-item-body``, ``ev-meta-table``,
``ev-card`` (``ev-card-wide``, attribute ``data-debugger``) / ``ev-card-title`` / ``ev-card-body``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval_viewer.backend.kinds import infer_kind
from eval_viewer.backend.model import DatapointRecord, Item
from eval_viewer.display.compare import pair_items, render_comparison
from eval_viewer.display.health import flags_by_debugger, health_badges
from eval_viewer.display.images import image_to_rgb
from eval_viewer.display.registry import RenderContext, render_item
from eval_viewer.display.view import Badge, Caption, Child, Group, Node, Problem, Table, Text
from eval_viewer.errors import NotFoundError
from eval_viewer.log_format import Kind

__all__ = ["datapoint_view", "render_keyed", "render_context", "find_item", "item_key", "parse_item_key",
           "input_image", "item_body", "ViewIds", "SECTIONS", "SECTION_TITLES", "WIDE_KINDS"]

SECTIONS = ("inputs", "labels", "meta", "debug")
"""The sections an item key can name, in the order of :data:`SECTION_TITLES`."""
SECTION_TITLES = ("Inputs", "Labels", "Meta info", "Debug outputs")
WIDE_KINDS = frozenset({Kind.FEATURE_MAP, Kind.ATTENTION, Kind.HEATMAP, Kind.IMAGE, Kind.MASK, Kind.DEPTH, Kind.LOGITS,
                        Kind.POINT_CLOUD})
"""Kinds drawn as several figures side by side: they take a whole line, and so does their debugger's card; the small
kinds (stats, series, scalars, text) flow beside each other."""


@dataclass(frozen=True)
class ViewIds:
    """How the app names the parts it re-draws or listens to: ``body(key)`` for an item's container and
    ``graph(key, role)`` for an interactive figure inside it. Both return plain JSON values."""

    body: Callable[[str], Any]
    graph: Callable[[str, str], Any]
    fold: Callable[[str], Any] | None = None
    """With ``toggle``: the container of a debug item that is drawn only while the user has it open (the app's
    way to a quick page: a closed item costs the browser its head only). None: every item drawn."""
    toggle: Callable[[str], Any] | None = None
    """The head of a foldable item: a click on it opens or folds the item."""
    badges: Callable[[str], Any] | None = None
    """The container of a debug card's health badges, by debugger name, there even while the card has none: the
    app fills it in when the pass's health summary finishes (dead channels, a head against its typical range) without
    drawing the card again."""


def item_key(section: str, name: str, key: str) -> str:
    """The stable key of an item: ``section`` (one of :data:`SECTIONS`), ``name`` (the debugger's, ``""`` elsewhere)
    and the item's own key, as a compact JSON list."""
    return json.dumps([section, name, key], separators=(",", ":"))


def parse_item_key(key: str) -> tuple[str, str, str]:
    """``(section, name, item key)`` of a key made by :func:`item_key`; :class:`NotFoundError` for anything else."""
    try:
        parts = json.loads(key)
    except (TypeError, ValueError):
        parts = None
    if not (isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts)
            and parts[0] in SECTIONS):
        raise NotFoundError(f"Not an item key: {key!r}")
    return parts[0], parts[1], parts[2]


def find_item(record: DatapointRecord, key: str) -> Item:
    """The item of ``record`` that ``key`` (:func:`item_key`) names; :class:`NotFoundError` (a ``LookupError``)
    saying what is there instead when ``record`` has no such item."""
    section, name, wanted = parse_item_key(key)
    where = f"datapoint {record.idx}"
    if section == "meta":
        for meta_key, value in record.meta_info.items():
            if str(meta_key) == wanted:
                return Item(key=wanted, kind=infer_kind(wanted, value), value=value)
        known = ", ".join(map(str, record.meta_info)) or "none"
        raise NotFoundError(f"{where}: no meta info {wanted!r} (keys: {known})")
    if section == "debug":
        if name not in record.debug:
            raise NotFoundError(f"{where}: no debugger {name!r} (debuggers: {', '.join(record.debug) or 'none'})")
        candidates: Sequence[Item] = record.debug[name]
        where += f", debugger {name!r}"
    elif section == "labels":  # a label, else a prediction without a label of its key: what names a pair
        candidates = (*record.labels, *record.predictions)
    else:
        candidates = record.inputs
    for item in candidates:
        if item.key == wanted:
            return item
    known = ", ".join(repr(item.key) for item in candidates) or "none"
    raise NotFoundError(f"{where}: no {section} item {wanted!r} (items: {known})")


def input_image(record: DatapointRecord) -> np.ndarray | None:
    """The first input that is an image, as HxWx3 uint8: the backdrop for every overlay of this datapoint."""
    for item in record.inputs:
        if item.kind == Kind.IMAGE:
            try:
                return image_to_rgb(item.value)
            except (TypeError, ValueError):
                return None
    return None


def render_context(image: np.ndarray | None, key: str, attention_query: int | None = None,
                   ids: ViewIds | None = None, record: DatapointRecord | None = None,
                   attention_head: int | None = None) -> RenderContext:
    """The context of item ``key``: the input image for overlays, the class names and palette ``record``'s log
    declares, the attention query and head chosen, and, with ``ids``, ids for its interactive figures."""
    graph_id = None if ids is None else (lambda role: ids.graph(key, role))
    return RenderContext(image=image, attention_query=attention_query, attention_head=attention_head,
                         graph_id=graph_id,
                         class_names=record.class_names if record is not None else None,
                         palette=record.palette if record is not None else None)


def render_keyed(item: Item, key: str, image: np.ndarray | None, attention_query: int | None = None,
                 ids: ViewIds | None = None, record: DatapointRecord | None = None,
                 attention_head: int | None = None) -> Node:
    """What goes inside the container of item ``key``: the rendered item (re-rendered with a new query later)."""
    return render_item(item, render_context(image, key, attention_query, ids, record, attention_head))


Choices = Mapping[str, tuple[int | None, int | None]]
"""Attention choices by item key: ``(query, head)`` (None: the most peaked query, the mean over heads)."""


def item_body(item: Item, key: str, image: np.ndarray | None, ids: ViewIds | None = None,
              record: DatapointRecord | None = None, choices: Choices | None = None) -> Group:
    """The container of item ``key`` holding the rendered item (what a folded item gets when it is opened), with
    the attention query and head ``choices`` holds for it."""
    query, head = (choices or {}).get(key, (None, None))
    return Group([render_keyed(item, key, image, query, ids=ids, record=record, attention_head=head)],
                 cls="ev-item-body", id=ids.body(key) if ids is not None else None)


def _item(item: Item, key: str, image: np.ndarray | None, ids: ViewIds | None,
          record: DatapointRecord | None = None, opened: Collection[str] | None = None,
          choices: Choices | None = None) -> Group:
    """An item under a small head: its key (none for a debugger's whole output) and its semantic kind.

    ``opened`` (with the fold ids of ``ids``): the item is foldable, drawn only when its key is in ``opened``."""
    head_parts = [Text(item.key, cls="ev-item-key", style="inline") if item.key else None, Badge(item.kind)]
    width = "ev-item-wide" if item.kind in WIDE_KINDS else "ev-item-small"
    if opened is None or ids is None or ids.fold is None or ids.toggle is None:
        return Group([Group(head_parts, cls="ev-item-head"), item_body(item, key, image, ids, record, choices)],
                     cls=f"ev-item-box {width}")
    is_open = key in opened
    label = Group([Text("", cls="ev-fold-mark", style="inline"), *head_parts], cls="ev-fold-label", tag="span")
    head = Group([label], cls="ev-item-head ev-fold-head", id=ids.toggle(key))
    fold = Group([item_body(item, key, image, ids, record, choices)] if is_open else [],
                 cls="ev-fold ev-open" if is_open else "ev-fold", id=ids.fold(key))
    return Group([head, fold], cls=f"ev-item-box {width}")


def _fmt(value: float) -> str:
    return "NaN" if not math.isfinite(value) else f"{value:.4g}"


def _scores(record: DatapointRecord, metric: str | None, higher_is_better: Mapping[str, bool]) -> Group:
    chips = []
    for name, value in record.scores.items():
        arrow = "↑" if higher_is_better.get(name, True) else "↓"
        classes = "ev-score" + (" ev-score-chosen" if name == metric else "") + (
            " ev-score-nan" if not math.isfinite(value) else "")
        chips.append(Group([Text(f"{name} {arrow}", cls="ev-score-name", style="inline"),
                            Text(_fmt(value), cls="ev-score-value", style="inline")], cls=classes))
    return Group(chips, cls="ev-scores")


def _section(title: str, children: Sequence[Child], empty: str, note: str | None = None) -> Group:
    body = list(children) if children else [Text(empty, cls="ev-empty")]
    slug = title.lower().replace(" ", "-")
    return Group([Text(title, cls="ev-section-title", style="h2"),
                  Caption(note[:1].upper() + note[1:] + ".", cls="ev-section-note") if note else None,
                  Group(body, cls="ev-section-body")],
                 cls=f"ev-section ev-section-{slug}", tag="section")


def _labels(record: DatapointRecord, image: np.ndarray | None, ids: ViewIds | None) -> list[Group]:
    """Each label beside its prediction (masks overlaid on the input image with an error map), via the display's
    pairing; a label or prediction without a partner is shown alone."""
    rows = []
    for label, prediction in pair_items(record.labels, record.predictions):
        title = " · ".join(
            f"{side} {item.key}".strip() for side, item in (("label", label), ("prediction", prediction)) if item
        )
        kinds = {item.kind for item in (label, prediction) if item is not None}
        named = label if label is not None else prediction
        assert named is not None  # pair_items never yields an empty pair
        key = item_key("labels", "", named.key)
        head = Group([Text(title, cls="ev-item-key", style="inline"), Badge(" / ".join(sorted(kinds)))],
                     cls="ev-item-head")
        rows.append(Group([head, render_comparison(label, prediction, render_context(image, key, ids=ids,
                                                                                      record=record))],
                          cls="ev-item-box ev-pair"))
    return rows


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float, np.generic))


def _meta(record: DatapointRecord, image: np.ndarray | None, ids: ViewIds | None) -> list[Node]:
    """Scalars as a key/value table; arrays and nested values through the display registry."""
    scalars = [(str(k), str(v)) for k, v in record.meta_info.items() if _is_scalar(v)]
    parts: list[Node] = [Table(scalars, cls="ev-meta-table", row_headers=True)] if scalars else []
    for key, value in record.meta_info.items():
        if not _is_scalar(value):
            item = Item(key=str(key), kind=infer_kind(str(key), value), value=value)
            parts.append(_item(item, item_key("meta", "", str(key)), image, ids, record))
    return parts


def _debug(record: DatapointRecord, image: np.ndarray | None, ids: ViewIds | None,
           opened: Collection[str] | None = None, health: Mapping[str, Sequence[Any]] | None = None,
           choices: Choices | None = None) -> list[Group]:
    """One card per debugger, titled with its name, holding every item it saved (foldable with ``opened``)."""
    cards = []
    for name, items in record.debug.items():
        body = [_item(item, item_key("debug", name, item.key), image, ids, record, opened, choices)
                for item in items]
        wide = any(item.kind in WIDE_KINDS for item in items)
        badges = health_badges(health.get(name, ())) if health else None
        if ids is not None and ids.badges is not None:
            badges = Group([badges], cls="ev-health-slot", id=ids.badges(name))
        cards.append(Group([Text(name, cls="ev-card-title", style="h3"), badges,
                            Group(body or [Text("saved nothing", cls="ev-empty")], cls="ev-card-body")],
                           cls="ev-card ev-card-wide" if wide else "ev-card", data={"debugger": name}))
    return cards


def datapoint_view(record: DatapointRecord, metric: str | None = None,
                   higher_is_better: Mapping[str, bool] | None = None, *, ids: ViewIds | None = None,
                   opened: Collection[str] | None = None, health: Sequence[Any] | None = None,
                   choices: Choices | None = None) -> Group:
    """Everything saved about one datapoint: its scores (``metric`` highlighted), any problems reading it, and the
    four sections. ``ids``: the app's ids for the parts it re-draws (None: no ids, e.g. in a notebook).
    ``opened`` (with ``ids.fold``): debug items are foldable and only the keys in ``opened`` are drawn.
    ``health``: the datapoint's health flags (:mod:`eval_viewer.backend.health`), a badge on each card with one.
    ``choices``: the attention query and head chosen for debug items, by item key."""
    image = input_image(record)
    problems = Problem("Some of this datapoint could not be read", items=record.problems,
                       cls="ev-error ev-problems") if record.problems else None
    inputs = [_item(item, item_key("inputs", "", item.key), image, ids, record) for item in record.inputs]
    sections = Group([
        _section("Inputs", inputs, "No inputs were saved for this datapoint.", record.notes.get("inputs")),
        _section("Labels", _labels(record, image, ids), "No labels or predictions were saved for this datapoint.",
                 record.notes.get("labels")),
        _section("Meta info", _meta(record, image, ids), "No meta info was saved for this datapoint."),
        _section("Debug outputs", _debug(record, image, ids, opened, flags_by_debugger(health) if health else None,
                                         choices),
                 "No debugger saved anything for this datapoint in this epoch.",
                 "click an item's name to draw it or fold it; what is open stays open from datapoint to datapoint"
                 if opened is not None and ids is not None and ids.fold is not None and record.debug else None),
    ], cls="ev-sections")
    return Group([_scores(record, metric, higher_is_better or {}), problems, sections], cls="ev-datapoint-content",
                 data={"idx": str(record.idx)})
