"""The page: a header of selectors, the overview, and the datapoint view (one of the two shown at a time).

Everything here is static; callbacks fill the panels in. Slow panels sit inside ``dcc.Loading`` so a user sees that
something is coming. Layout knows ids (from :mod:`eval_viewer.app.ids`) and CSS class names (``assets/style.css``),
nothing about the store.

The overview's graphs and grids are not in the page at first: their places (``ids.overview_slot``) are filled with
:func:`overview_part` when the overview is first shown (``callbacks/overview.py``). A ``dcc.Graph`` makes the browser
load and run plotly.js and an AG Grid its grid code; a page opened on a datapoint (a shared link) would wait for both
before its datapoint is drawn, for panels it does not show. Each slot holds all that one group of callbacks writes,
so a callback's outputs are all in the page or all missing (Dash skips it then); what the "vs" selectors' callback
writes (the comparison's filter, thresholds and box) and the health panel are in the page from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dash_ag_grid as dag
from dash import dcc, html

from eval_viewer.app import ids
from eval_viewer.app.compare_layout import (
    compare_panel,
    compare_selectors,
    compare_stores,
    delta_row,
    failures_body,
    paired_body,
    summary_body,
)
from eval_viewer.app.health_layout import health_panel
from eval_viewer.app.table_query import BLOCK_ROWS
from eval_viewer.app.training_layout import training_view, view_tabs

__all__ = ["make_layout", "panel", "overview_part", "GRID_THEME"]

GRID_THEME = (
    "themeQuartz.withParams({fontFamily: 'inherit', fontSize: 12, headerFontSize: 12, spacing: 4, "
    "rowHeight: 28, headerHeight: 32, accentColor: '#1f4fd1', headerFontWeight: 600, "
    "headerBackgroundColor: '#f4f6fa', borderColor: '#e3e7ef', wrapperBorderRadius: 6})"
)
_GRAPH_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True,
                                 "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"]}


_HELP = html.Div(
    [
        html.Div("How to look", className="ev-help-title"),
        html.Ul([
            html.Li(["Open a datapoint from the table or the score map; ", html.Kbd("←"), " ", html.Kbd("→"),
                     " step through the ranking, ", html.Kbd("Esc"), " comes back here."]),
            html.Li("The table sorts and filters on any score or meta field; the ranking (and the arrows) follow the "
                    "metric chosen above, failures (NaN) first."),
            html.Li("The address bar holds the view: reload it or share it."),
        ]),
    ],
    className="ev-help",
)


def panel(title: str, body: Any, *, hint: str | None = None, class_name: str = "") -> html.Section:
    """A titled box; ``hint`` is a one-line explanation shown beside the title."""
    head = [html.H2(title, className="ev-box-title")]
    if hint:
        head.append(html.Span(hint, className="ev-box-hint"))
    return html.Section([html.Div(head, className="ev-box-head"), body], className=f"ev-box {class_name}".strip())


def _selector(label: str, component: Any) -> html.Label:
    return html.Label([html.Span(label, className="ev-selector-label"), component], className="ev-selector")


def _header() -> html.Header:
    return html.Header(
        [
            html.Div([html.Span("eval", className="ev-brand-a"), html.Span("viewer", className="ev-brand-b")],
                     className="ev-brand"),
            html.Div(
                [
                    _selector("Run", dcc.Dropdown(id=ids.RUN, clearable=False, className="ev-dropdown ev-run")),
                    _selector("Pass", dcc.Dropdown(id=ids.PASS, clearable=False, className="ev-dropdown ev-pass")),
                    _selector("Metric", dcc.Dropdown(id=ids.METRIC, clearable=False,
                                                     className="ev-dropdown ev-metric")),
                    *compare_selectors(_selector),
                ],
                className="ev-selectors",
            ),
        ],
        className="ev-header",
    )


def _graph(graph_id: str) -> dcc.Loading:
    return dcc.Loading(dcc.Graph(id=graph_id, config=_GRAPH_CONFIG, className="ev-graph"), type="dot",
                       delay_show=150)


def _table() -> dag.AgGrid:
    return dag.AgGrid(
        id=ids.TABLE,
        columnDefs=[],
        rowModelType="infinite",  # rows come block by block from the server, sorted and filtered there
        getRowId="'' + params.data.idx",
        defaultColDef={"sortable": True, "filter": True, "floatingFilter": True, "resizable": True,
                       "minWidth": 80, "suppressHeaderMenuButton": True},
        dashGridOptions={
            "theme": {"function": GRID_THEME},
            "suppressFieldDotNotation": True,
            "animateRows": False,
            "cacheBlockSize": BLOCK_ROWS,
            # dash-ag-grid hands a response to the latest request's callback, so one request at a time keeps every
            # block with its own rows (callbacks/table.py answers every request, so the queue never stalls)
            "maxConcurrentDatasourceRequests": 1,
            "tooltipShowDelay": 300,
            "rowSelection": {"mode": "singleRow", "checkboxes": False, "enableClickSelection": True},
        },
        columnSize="responsiveSizeToFit",
        style={"height": "460px", "width": "100%"},
        className="ev-failure-table",
    )


def _runs_row() -> list[Any]:
    return [
        panel("Runs", html.Div([dcc.Loading(html.Div(id=ids.RUNS_TABLE), type="dot", delay_show=150), _HELP]),
              class_name="ev-runs-box"),
        panel("Metric over epochs", _graph(ids.HISTORY), hint="aggregated, one line per run"),
    ]


def _scores_row() -> list[Any]:
    return [
        panel("Score distribution", _graph(ids.DISTRIBUTION), hint="per datapoint"),
        panel("Score map", _graph(ids.SCORE_MAP), hint="one cell per datapoint, click to open"),
    ]


def _table_body() -> list[Any]:
    return [html.Div(id=ids.TABLE_CAPTION, className="ev-table-caption"), _table()]


_PARTS: dict[str, Callable[[], list[Any]]] = {
    "deltas": delta_row, "summary": summary_body, "failures": failures_body,
    "runs": _runs_row, "scores": _scores_row, "table": _table_body,
}


def overview_part(name: str) -> list[Any]:
    """The children of the overview's slot ``name`` (``ids.overview_slot(name)``); each slot holds every component
    that one group of callbacks writes, so a group's outputs are all there or all missing."""
    return _PARTS[name]()


def _slot(name: str, class_name: str | None = None) -> html.Div:
    return html.Div(id=ids.overview_slot(name), className=class_name)


def _overview() -> html.Div:
    return html.Div(
        id=ids.OVERVIEW_VIEW,
        className="ev-view",
        children=[
            dcc.Store(id=ids.OVERVIEW_MOUNTED),
            compare_panel(panel),
            _slot("runs", "ev-layout-row ev-layout-row-runs"),
            _slot("scores", "ev-layout-row"),
            health_panel(panel),
            panel("Datapoints", _slot("table"), hint="worst first · click a row to open it · sort and filter any column"),
        ],
    )


def _datapoint() -> html.Div:
    nav = html.Div(
        [
            html.Button("Overview", id=ids.BACK, className="ev-button ev-back", title="Back to the overview (Esc)",
                        **{"data-hotkey": "Escape"}),
            html.Div(
                [
                    html.Button("←", id=ids.PREV, className="ev-button ev-step", title="Previous: worse (←)",
                                **{"data-hotkey": "ArrowLeft"}),
                    html.Button("→", id=ids.NEXT, className="ev-button ev-step", title="Next: less bad (→)",
                                **{"data-hotkey": "ArrowRight"}),
                ],
                className="ev-steps",
            ),
            html.Div(id=ids.POSITION, className="ev-position"),
        ],
        className="ev-nav",
    )
    poll = dcc.Interval(id=ids.INDEX_POLL, interval=500, disabled=True)
    body = dcc.Loading(html.Div(id=ids.DATAPOINT_BODY, className="ev-datapoint-body"), type="dot", delay_show=150,
                       parent_className="ev-loading-body")
    return html.Div([nav, poll, body, paired_body()], id=ids.DATAPOINT_VIEW, className="ev-view", hidden=True)


def make_layout(rescan_s: float = 10.0) -> html.Div:
    """The whole page; the URL (``dcc.Location``) drives everything else. ``rescan_s``: how often to look for new
    runs and passes (0: never)."""
    return html.Div(
        [
            dcc.Location(id=ids.URL, refresh="callback-nav"),
            dcc.Location(id=ids.URL_SET, refresh="callback-nav"),  # URL follows it (its callback-nav events)
            dcc.Store(id=ids.URL_WRITTEN),
            dcc.Store(id=ids.SELECTION),
            *compare_stores(),
            dcc.Store(id=ids.TABLE_MODEL),
            dcc.Store(id=ids.OPEN_ITEMS, storage_type="local"),
            dcc.Store(id=ids.DATAPOINT_DRAWN),
            dcc.Store(id=ids.LOG_VERSION),
            dcc.Interval(id=ids.RESCAN, interval=max(rescan_s, 1.0) * 1000, disabled=rescan_s <= 0),
            _header(),
            html.Div(id=ids.NOTICE, className="ev-notice"),
            html.Main([view_tabs(), html.Div([_overview(), _datapoint()], id=ids.EVALUATION_VIEW, className="ev-view"),
                       training_view(panel)], className="ev-main"),
        ],
        className="ev-app",
    )
