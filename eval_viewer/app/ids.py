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
    "URL_SET",
    "URL_WRITTEN",
    "SELECTION",
    "RESCAN",
    "LOG_VERSION",
    "NOTICE",
    "RUN",
    "PASS",
    "METRIC",
    "OVERVIEW_VIEW",
    "OVERVIEW_SLOT_TYPE",
    "overview_slot",
    "OVERVIEW_MOUNTED",
    "DATAPOINT_VIEW",
    "RUNS_TABLE",
    "HISTORY",
    "DISTRIBUTION",
    "SCORE_MAP",
    "TABLE",
    "TABLE_CAPTION",
    "TABLE_MODEL",
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
    "ITEM_FOLD_TYPE",
    "HEAD_CHOICE_TYPE",
    "head_choice",
    "DATAPOINT_DRAWN",
    "ITEM_TOGGLE_TYPE",
    "OPEN_ITEMS",
    "item_fold",
    "item_toggle",
    "VS_RUN",
    "VS_PASS",
    "ALIGN_BY",
    "COMPARE_BOX",
    "COMPARE_SELECTION",
    "COMPARE_CAPTION",
    "DELTA_FILTER",
    "CHANGE",
    "GOOD",
    "BAD",
    "DELTA_TABLE",
    "DELTA_MAP",
    "SUMMARY_JOB",
    "SUMMARY_POLL",
    "SUMMARY_PROGRESS",
    "SUMMARY_TABLE",
    "WORST_LIST",
    "WORST_TYPE",
    "worst_item",
    "PAIRED_BODY",
    "FAIL_PASSES",
    "FAIL_PERCENTILE",
    "FAIL_AT_LEAST",
    "FAIL_CAPTION",
    "FAIL_RESULT",
    "FAIL_OPTIONS",
    "FAIL_TABLE",
    "FAIL_MAP",
    "VIEW_TABS",
    "VIEW_TABS_BOX",
    "EVALUATION_VIEW",
    "TRAINING_VIEW",
    "TRAIN_STEP",
    "TRAIN_DATAPOINT",
    "TRAIN_COMPARE",
    "TRAIN_SELECTION",
    "TRAIN_CAPTION",
    "TRAIN_STEP_BODY",
    "TRAIN_ACROSS_BODY",
    "TRAIN_POLL",
    "HEALTH_BOX",
    "HEALTH_PROGRESS",
    "HEALTH_POLL",
    "HEALTH_JOB",
    "HEALTH_READY",
    "HEALTH_BODY",
    "HEALTH_CELL_TYPE",
    "health_cell",
    "HEALTH_THRESHOLDS",
    "HEALTH_THRESHOLD_TYPE",
    "health_threshold",
    "HEALTH_THRESHOLD_MESSAGE",
    "HEALTH_THRESHOLD_RESET",
    "CARD_BADGES_TYPE",
    "card_badges",
]

# State: the URL is the single source of truth; SELECTION mirrors its run/pass/metric part so the overview only
# re-renders when one of those changes, not on every step through the datapoints.
URL = "ev-url"
URL_SET = "ev-url-set"
"""A second ``dcc.Location``, through which the selector callback rewrites the address (``URL`` follows it). Dash
holds a callback back while another one that writes one of its inputs is pending, and the selector callback waits for
the dropdowns' code to load: were it to write ``URL``, drawing a datapoint from a link would wait for that too."""
URL_WRITTEN = "ev-url-written"
"""The address the selector callback last wrote through ``URL_SET``: when ``URL`` follows, that is its own echo."""
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
OVERVIEW_SLOT_TYPE = "ev-overview-slot"
OVERVIEW_MOUNTED = "ev-overview-mounted"
"""True once the overview has been shown, which mounts its panels (graphs and grids): a page opened on a datapoint
mounts them only then, so plotly.js and AG Grid are not loaded and run before the datapoint is drawn."""


def overview_slot(name: Any) -> dict[str, Any]:
    """A place in the overview filled with its panels (``name``: which ones) when the overview is first shown."""
    return {"type": OVERVIEW_SLOT_TYPE, "name": name}


# Overview panels.
RUNS_TABLE = "ev-runs"
HISTORY = "ev-history"
DISTRIBUTION = "ev-distribution"
SCORE_MAP = "ev-score-map"
TABLE = "ev-table"
TABLE_CAPTION = "ev-table-caption"
TABLE_MODEL = "ev-table-model"
"""The failure table's current ``{"sortModel", "filterModel"}`` (from its last block request): ← → walk its rows."""

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


# Foldable debug items: drawn only while open; which are open is kept in the browser (OPEN_ITEMS, local storage).
ITEM_FOLD_TYPE = "ev-item-fold"
ITEM_TOGGLE_TYPE = "ev-item-toggle"
OPEN_ITEMS = "ev-open-items"
"""The item keys the user opened (a list; local storage, so they stay open across datapoints, passes and reloads)."""


HEAD_CHOICE_TYPE = "ev-head-choice"
DATAPOINT_DRAWN = "ev-datapoint-drawn"
"""The state (query string, the attention choice left out) of the datapoint view drawn: a URL change that only
chooses an attention head or query re-draws that one item, not the view."""


def head_choice(key: Any, head: Any) -> dict[str, Any]:
    """A chip of an attention item's head picker: ``head`` is ``"mean"`` or a head number as a string."""
    return {"type": HEAD_CHOICE_TYPE, "item": key, "head": head}


def item_fold(key: Any) -> dict[str, Any]:
    """The container of a foldable item: its body while open, nothing while folded."""
    return {"type": ITEM_FOLD_TYPE, "item": key}


def item_toggle(key: Any) -> dict[str, Any]:
    """The head of a foldable item; a click opens or folds it."""
    return {"type": ITEM_TOGGLE_TYPE, "item": key}


# Comparing two passes (callbacks/compare.py): the "vs" selectors in the header, the compare panel of the overview,
# and the paired view in the datapoint view.
VS_RUN = "ev-vs-run"
VS_PASS = "ev-vs-pass"
ALIGN_BY = "ev-align-by"
COMPARE_BOX = "ev-compare"
COMPARE_SELECTION = "ev-compare-selection"
"""Mirrors the URL's comparison (both passes, metric, alignment, thresholds, filter) so the panel only re-draws when
one of those changes."""
COMPARE_CAPTION = "ev-compare-caption"
DELTA_FILTER = "ev-delta-filter"
CHANGE = "ev-threshold-change"
GOOD = "ev-threshold-good"
BAD = "ev-threshold-bad"
DELTA_TABLE = "ev-delta-table"
DELTA_MAP = "ev-delta-map"
SUMMARY_JOB = "ev-summary-job"
SUMMARY_POLL = "ev-summary-poll"
"""Ticks while the pass-wide layer × head summary is being computed in the background."""
SUMMARY_PROGRESS = "ev-summary-progress"
SUMMARY_TABLE = "ev-summary-table"
WORST_LIST = "ev-worst-list"
WORST_TYPE = "ev-worst-item"
PAIRED_BODY = "ev-paired-body"


def worst_item(idx: Any, focus: Any) -> dict[str, Any]:
    """A datapoint in the list of where a layer × head cell diverges most: opens the paired view on ``focus``."""
    return {"type": WORST_TYPE, "idx": idx, "focus": focus}


# Common failures (callbacks/compare.py): datapoints that fail in most of the passes the user picks.
FAIL_PASSES = "ev-fail-passes"
FAIL_PERCENTILE = "ev-fail-percentile"
FAIL_AT_LEAST = "ev-fail-at-least"
FAIL_CAPTION = "ev-fail-caption"
FAIL_RESULT = "ev-fail-result"
"""The common failures' list and map: hidden while there is nothing to list (fewer than two passes, no failures)."""
FAIL_OPTIONS = "ev-fail-options"
"""The percentile and "fails in" controls: hidden until two passes are picked."""
FAIL_TABLE = "ev-fail-table"
FAIL_MAP = "ev-fail-map"


# Health (callbacks/health.py): the per-pass summary of the overview, computed in the background.
HEALTH_BOX = "ev-health"
HEALTH_PROGRESS = "ev-health-progress"
HEALTH_POLL = "ev-health-poll"
"""Ticks while the pass's health summary is being computed in the background."""
HEALTH_JOB = "ev-health-job"
HEALTH_READY = "ev-health-ready"
"""The job key of the finished summary (``+<previous epoch>`` once that one's is done too, for the scale jumps): the
failure table rebuilds its columns (health flags) when it changes."""
HEALTH_BODY = "ev-health-body"
HEALTH_CELL_TYPE = "ev-health-cell"


def health_cell(layer: Any, kind: Any) -> dict[str, Any]:
    """A (layer, kind) count of the health summary: a click filters the failure table to those datapoints."""
    return {"type": HEALTH_CELL_TYPE, "layer": layer, "kind": kind}


HEALTH_THRESHOLDS = "ev-health-thresholds"
"""The health thresholds the URL names (the changed ones, field -> value): the summary listens here, not to the URL."""
HEALTH_THRESHOLD_TYPE = "ev-health-threshold"
HEALTH_THRESHOLD_MESSAGE = "ev-health-threshold-message"
"""Why a threshold just typed was refused (empty while they are all good)."""
HEALTH_THRESHOLD_RESET = "ev-health-threshold-reset"


CARD_BADGES_TYPE = "ev-card-badges"


def card_badges(debugger: Any) -> dict[str, Any]:
    """The health badges of the datapoint view's card of ``debugger`` (filled in again when the pass's health
    summary finishes while the view is open)."""
    return {"type": CARD_BADGES_TYPE, "debugger": debugger}


def health_threshold(field: Any) -> dict[str, Any]:
    """The health panel's input for threshold ``field`` (a :class:`~eval_viewer.backend.health.HealthThresholds`
    field name)."""
    return {"type": HEALTH_THRESHOLD_TYPE, "field": field}


# The Training tab (callbacks/training.py): "Evaluation | Training" above the views when the run has training
# snapshots; the step slider, the step's composites, and one datapoint across chosen steps.
VIEW_TABS = "ev-view-tabs"
VIEW_TABS_BOX = "ev-view-tabs-box"
EVALUATION_VIEW = "ev-evaluation"
"""The overview and the datapoint view together: hidden while the Training tab is shown."""
TRAINING_VIEW = "ev-training"
TRAIN_STEP = "ev-train-step"
TRAIN_DATAPOINT = "ev-train-datapoint"
TRAIN_COMPARE = "ev-train-compare"
TRAIN_SELECTION = "ev-train-selection"
"""The resolved Training state (run, step, datapoint, compared steps and their files' versions): drawing listens here."""
TRAIN_CAPTION = "ev-train-caption"
TRAIN_STEP_BODY = "ev-train-step-body"
TRAIN_ACROSS_BODY = "ev-train-across-body"
TRAIN_POLL = "ev-train-poll"
"""Ticks while a shown snapshot's pages are still being indexed, so its composites are drawn once they are."""
