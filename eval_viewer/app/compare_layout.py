"""The static parts of comparing two passes: the "vs" selectors, the compare panel and the paired view's container.

Filled in by :mod:`eval_viewer.app.callbacks.compare`; hidden (``ev-compare`` with ``hidden``) while no second pass is
chosen. The layer × head table's progress is a plain bar fed by a polling ``dcc.Interval`` (see the callbacks). The
common-failures panel below it is always there: it has its own pass picker (any number of passes).

The grids, the maps and what their callbacks write with them are :func:`delta_row`, :func:`summary_body` and
:func:`failures_body`, put in their ``ids.overview_slot`` when the overview is first shown (see
:mod:`eval_viewer.app.layout`); the controls the "vs" selectors' callback reads and writes are there from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dash_ag_grid as dag
from dash import dcc, html

from eval_viewer.app import ids
from eval_viewer.app.compare_state import AT_LEAST

__all__ = ["compare_selectors", "compare_panel", "common_failures_panel", "compare_stores", "paired_body",
           "delta_row", "summary_body", "failures_body", "DELTA_COLUMNS", "SUMMARY_COLUMNS"]

_GRID_OPTIONS: dict[str, Any] = {
    "animateRows": False,
    "suppressFieldDotNotation": True,
    "rowSelection": {"mode": "singleRow", "checkboxes": False, "enableClickSelection": True},
}
_NUMBER = {"type": "numericColumn", "valueFormatter": {"function": "params.value == null ? '—' : "
                                                                  "Number(params.value.toPrecision(4)).toString()"}}
DELTA_COLUMNS = [
    {"field": "idx", "headerName": "idx a", "maxWidth": 90},
    {"field": "idx_b", "headerName": "idx b", "maxWidth": 90},
    {"field": "a", "headerName": "pass a", **_NUMBER},
    {"field": "b", "headerName": "pass b", **_NUMBER},
    {"field": "delta", "headerName": "Δ (b − a)", "sort": None, **_NUMBER},
    {"field": "gain", "headerName": "gain", "headerTooltip": "signed improvement: −∞ became NaN", **_NUMBER},
    {"field": "status", "headerName": "status"},
]
SUMMARY_COLUMNS = [
    {"field": "layer", "headerName": "layer", "minWidth": 160},
    {"field": "head", "headerName": "head", "maxWidth": 80},
    {"field": "jsd", "headerName": "JSD (bits)", "headerTooltip": "Jensen–Shannon divergence, per query then "
     "averaged; the square of scipy's jensenshannon(base=2)", **_NUMBER},
    {"field": "entropy_a", "headerName": "entropy a", **_NUMBER},
    {"field": "entropy_b", "headerName": "entropy b", **_NUMBER},
    {"field": "topk_a", "headerName": "top-5 a", **_NUMBER},
    {"field": "topk_b", "headerName": "top-5 b", **_NUMBER},
    {"field": "rel_error", "headerName": "rel. error", **_NUMBER},
    {"field": "cosine", "headerName": "cosine", **_NUMBER},
    {"field": "sqnr_db", "headerName": "SQNR dB", **_NUMBER},
    {"field": "count", "headerName": "n", "maxWidth": 80},
]


def compare_selectors(selector: Callable[[str, Any], Any]) -> list[Any]:
    """"vs run", "vs pass" and "align by" in the header."""
    return [
        selector("vs run", dcc.Dropdown(id=ids.VS_RUN, clearable=True, placeholder="compare with…",
                                        className="ev-dropdown ev-vs-run")),
        selector("vs pass", dcc.Dropdown(id=ids.VS_PASS, clearable=False, className="ev-dropdown ev-vs-pass")),
        selector("align by", dcc.Dropdown(id=ids.ALIGN_BY, clearable=True, placeholder="index",
                                          className="ev-dropdown ev-align-by")),
    ]


def _threshold(label: str, input_id: str, hint: str) -> html.Label:
    return html.Label([html.Span(label, className="ev-selector-label"),
                       dcc.Input(id=input_id, type="number", debounce=True, className="ev-threshold")],
                      className="ev-threshold-box", title=hint)


def compare_panel(panel: Callable[..., Any]) -> html.Div:
    deltas = html.Div([
        html.Div(id=ids.COMPARE_CAPTION, className="ev-table-caption"),
        html.Div([
            dcc.RadioItems(id=ids.DELTA_FILTER, value="all", inline=True, className="ev-delta-filter",
                           options=[{"label": v, "value": v} for v in
                                    ("all", "regressed", "improved", "forgotten", "changed")]),
            _threshold("change >", ids.CHANGE, "a delta larger than this (metric units) is a regression or an "
                       "improvement; default: 5 % of pass a's 5–95 % spread"),
            _threshold("good ≥", ids.GOOD, "good in pass a (default: its median)"),
            _threshold("bad <", ids.BAD, "bad in pass b (default: pass a's worst-quartile boundary)"),
        ], className="ev-compare-controls"),
        html.Div(id=ids.overview_slot("deltas"), className="ev-layout-row"),
    ])
    summary = html.Div(id=ids.overview_slot("summary"))
    box = html.Div([
        panel("Changed datapoints", deltas, hint="pass a → pass b · click a row or a cell to open both"),
        panel("Where inside the model", summary,
              hint="every matched datapoint, layer × head, worst first · click a cell for its worst datapoints"),
    ], id=ids.COMPARE_BOX, className="ev-compare", hidden=True)
    return html.Div([box, common_failures_panel(panel)])


def delta_row() -> list[Any]:
    """The delta table and map (in their slot, a layout row)."""
    return [
        dag.AgGrid(id=ids.DELTA_TABLE, columnDefs=DELTA_COLUMNS, rowData=[], getRowId="'' + params.data.idx",
                   defaultColDef={"sortable": True, "resizable": True, "minWidth": 70},
                   dashGridOptions=_GRID_OPTIONS, columnSize="responsiveSizeToFit",
                   style={"height": "360px", "width": "100%"}, className="ev-delta-grid"),
        dcc.Graph(id=ids.DELTA_MAP, config={"displaylogo": False}, className="ev-graph ev-delta-map"),
    ]


def summary_body() -> list[Any]:
    """The layer × head summary: progress, its poll and job, the table and the worst datapoints of a clicked row."""
    return [
        html.Div(id=ids.SUMMARY_PROGRESS, className="ev-summary-progress"),
        dcc.Interval(id=ids.SUMMARY_POLL, interval=400, disabled=True),
        dcc.Store(id=ids.SUMMARY_JOB),
        html.Div([
            dag.AgGrid(id=ids.SUMMARY_TABLE, columnDefs=SUMMARY_COLUMNS, rowData=[], getRowId="params.data.id",
                       defaultColDef={"sortable": True, "resizable": True, "minWidth": 70},
                       dashGridOptions=_GRID_OPTIONS, columnSize="responsiveSizeToFit",
                       style={"height": "320px", "width": "100%"}, className="ev-summary-grid"),
            html.Div(id=ids.WORST_LIST, className="ev-worst-list"),
        ], className="ev-layout-row"),
    ]


def common_failures_panel(panel: Callable[..., Any]) -> html.Section:
    """Pick passes (runs, epochs) and a percentile; the datapoints failing in most of them, as a list and a map
    (the panel's body is :func:`failures_body`, in its slot)."""
    return panel("Common failures", html.Div(id=ids.overview_slot("failures")),
                 hint="datapoints that fail in most of the chosen runs or epochs · click one to open it",
                 class_name="ev-fail-box")


def failures_body() -> list[Any]:
    """The common-failures panel's pass picker, percentile and share, caption, list and map. Until two passes are
    picked only the picker and the caption's prompt show (the options, the empty grid and map stay hidden)."""
    controls = html.Div([
        html.Label([html.Span("passes", className="ev-selector-label"),
                    dcc.Dropdown(id=ids.FAIL_PASSES, multi=True, placeholder="pick two or more runs or epochs…",
                                 className="ev-dropdown ev-fail-passes")], className="ev-fail-pick"),
        html.Div([  # shown once passes are picked: until then the panel is its picker and a one-line prompt
            html.Label([html.Span("worst", className="ev-selector-label"),
                        dcc.Input(id=ids.FAIL_PERCENTILE, type="number", min=1, max=99, step=1, value=25,
                                  debounce=True, className="ev-threshold"),
                        html.Span("% of each pass", className="ev-selector-label")],
                       className="ev-threshold-box", title="a datapoint fails in a pass when it is in that pass's "
                                                           "worst percentile of the metric chosen above (or NaN)"),
            html.Div([html.Span("fails in", className="ev-selector-label"),
                      dcc.RadioItems(id=ids.FAIL_AT_LEAST, value="most", inline=True, className="ev-delta-filter",
                                     options=[{"label": f"{v} of them", "value": v} for v in AT_LEAST])],
                     className="ev-fail-at-least"),
        ], id=ids.FAIL_OPTIONS, className="ev-fail-options", hidden=True),
    ], className="ev-compare-controls")
    result = html.Div([
        dag.AgGrid(id=ids.FAIL_TABLE, columnDefs=[], rowData=[], getRowId="'' + params.data.idx",
                   defaultColDef={"sortable": True, "resizable": True, "minWidth": 70},
                   dashGridOptions=_GRID_OPTIONS, columnSize="responsiveSizeToFit",
                   style={"height": "360px", "width": "100%"}, className="ev-fail-grid"),
        dcc.Graph(id=ids.FAIL_MAP, config={"displaylogo": False}, className="ev-graph ev-fail-map"),
    ], id=ids.FAIL_RESULT, className="ev-layout-row", hidden=True)
    return [controls, html.Div(id=ids.FAIL_CAPTION, className="ev-table-caption"), result]


def compare_stores() -> list[Any]:
    return [dcc.Store(id=ids.COMPARE_SELECTION)]  # SUMMARY_JOB is in summary_body, with what writes it


def paired_body() -> dcc.Loading:
    return dcc.Loading(html.Div(id=ids.PAIRED_BODY, className="ev-datapoint-body ev-paired-body"), type="dot",
                       delay_show=150)
