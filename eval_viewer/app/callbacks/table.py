"""The failure table: every datapoint with every metric and the scalar meta_info fields, worst first.

The grid uses AG Grid's infinite row model: it asks for one block of rows at a time (``getRowsRequest``: start, end,
sort model, filter model) and this module answers with that block (``getRowsResponse``), filtered, sorted and sliced
on the server by :mod:`eval_viewer.app.table_query`. The browser never holds more than the blocks a user scrolled to,
so a 100,000-datapoint epoch costs what a 100-datapoint one does. The default order is the store's worst-first
ranking of the chosen metric (NaN worst) with a ``rank`` column; any column sorts and filters. The columns behind the
blocks are built once per selection (:mod:`eval_viewer.app.failure_table`). When the selection changes, a clientside
callback (``assets/table.js``) empties the grid's block cache so it asks again. Clicking a row opens its datapoint.

The grid's sort and filter model of its last request is kept in ``TABLE_MODEL``, so ← and → walk the rows the table
shows, in its order (:func:`table_position`), not the bare ranking.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import dash
import numpy as np
from dash import ClientsideFunction, Input, Output, State, html, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import guarded
from eval_viewer.app.failure_table import (HEALTH_COUNT, TableCache, health_field, is_number_column, meta_field,
                                           metric_field)
from eval_viewer.app.state import Position, Resolved, ViewState, parse_query, position, resolve, to_query, with_idx
from eval_viewer.app.table_query import BLOCK_ROWS, query, row_dicts
from eval_viewer.backend import LogStore, Scores
from eval_viewer.display.health import KIND_TITLES
from eval_viewer.errors import ViewerError

__all__ = ["register", "table_columns", "table_caption", "index_ranges", "tables_for", "table_model",
           "table_position"]

log = logging.getLogger(__name__)

NUMBER_FORMAT = (
    "params.value == null ? 'NaN' : (Math.abs(params.value) >= 1e5 || (params.value != 0 && "
    "Math.abs(params.value) < 1e-3) ? d3.format('.3~e')(params.value) : d3.format('.4~f')(params.value))"
)
TABLE_ROW_PX = 28
TABLE_CHROME_PX = 110  # two header rows, the filter row, a scrollbar
TABLE_MAX_HEIGHT = 560
NUMBER_FILTER = {"filter": "agNumberColumnFilter"}  # the grid's filter UI; table_query applies the filter
TEXT_FILTER = {"filter": "agTextColumnFilter"}


def _min_width(header: str) -> int:
    """Enough pixels for the header text and the sort/filter icons, so no header is cut to "pixel_accu…"."""
    return max(90, 7 * len(header) + 48)


def table_columns(scores: Scores, metric: str | None, meta: Mapping[str, Sequence[Any]],
                  health: Mapping[str, Sequence[Any]] | None = None) -> list[dict[str, Any]]:
    """rank, idx, a "Scores" group (chosen metric first), a "Meta info" group and, once the pass's health summary
    is done, a "Health" group (how many problems; per kind, the layers where a datapoint has it)."""
    number = {**NUMBER_FILTER, "type": "rightAligned", "valueFormatter": {"function": NUMBER_FORMAT},
              "cellClassRules": {"ev-cell-nan": "params.value == null"}}
    ordered = ([metric] if metric else []) + [m for m in scores.metrics if m != metric]
    metric_cols = []
    for m in ordered:
        arrow = "↑" if scores.higher_is_better.get(m, True) else "↓"
        metric_cols.append({
            "field": metric_field(scores, m), "headerName": f"{m} {arrow}", "headerTooltip":
            f"{m}: {'higher' if arrow == '↑' else 'lower'} is better; NaN sorts as the worst",
            "minWidth": _min_width(f"{m} {arrow}"), **number,
            **({"cellClass": "ev-col-chosen", "headerClass": "ev-col-chosen"} if m == metric else {}),
        })
    columns: list[dict[str, Any]] = [
        {"field": "rank", "headerName": "rank", "sort": "asc", "pinned": "left", "width": 80, "minWidth": 70,
         **NUMBER_FILTER, "headerTooltip": f"position in the worst-first ranking by {metric}"},
        {"field": "idx", "headerName": "idx", "pinned": "left", "width": 80, "minWidth": 70, **NUMBER_FILTER,
         "cellClass": "ev-cell-idx"},
        {"headerName": "Scores", "children": metric_cols},
    ]
    if meta:
        meta_cols = []
        for name, values in meta.items():
            col: dict[str, Any] = {"field": meta_field(meta, name), "headerName": name, "minWidth": _min_width(name)}
            col.update({**NUMBER_FILTER, "type": "rightAligned"} if is_number_column(values) else TEXT_FILTER)
            meta_cols.append(col)
        columns.append({"headerName": "Meta info", "children": meta_cols})
    if health:
        health_cols: list[dict[str, Any]] = [{"field": HEALTH_COUNT, "headerName": "problems", "minWidth": 100,
                                              **NUMBER_FILTER, "type": "rightAligned",
                                              "headerTooltip": "health problems (layer x kind) of the datapoint"}]
        for kind in health:
            if kind != HEALTH_COUNT:
                title = KIND_TITLES.get(kind, kind)
                health_cols.append({"field": health_field(kind), "headerName": title, "minWidth": _min_width(title),
                                    **TEXT_FILTER, "headerTooltip": f"layers with {title}, in forward order"})
        columns.append({"headerName": "Health", "children": health_cols})
    return columns


def index_ranges(indices: Sequence[int], limit: int = 6) -> str:
    """``[4, 5, 6, 7, 12]`` as ``"4–7, 12"``; past ``limit`` runs, the rest as "…"."""
    runs: list[tuple[int, int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    text = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in runs[:limit])
    return text + (", …" if len(runs) > limit else "")


def table_caption(scores: Scores, metric: str | None, meta: Mapping[str, Sequence[Any]], matching: int,
                  missing: Sequence[int] = ()) -> list[Any]:
    """How many datapoints there are (and match the filters), what ranks them, how many NaN rank worst, and which
    have scores but no debug outputs in any readable page (``missing``: what a crashed writer or a lost page left
    out)."""
    total = scores.num_datapoints
    direction = "lower" if scores.higher_is_better.get(metric or "", True) else "higher"
    n_nan = int(np.isnan(scores.per_datapoint[metric]).sum()) if metric else 0
    count: list[Any] = ([html.B(f"{total:,}"), " datapoints"] if matching == total else
                        [html.B(f"{matching:,}"), " of ", html.B(f"{total:,}"), " datapoints match the filters"])
    return [
        *count, " · ranked by ", html.B(metric or "index"),
        f", worst ({direction}) first" if metric else "",
        f" · {n_nan} NaN ranked worst" if n_nan else "",
        f" · {len(meta)} meta fields" if meta else "",
        html.Span(f" · no debug outputs for {len(missing)} datapoint{'s' if len(missing) != 1 else ''} "
                  f"({index_ranges(missing)})", className="ev-caption-missing") if missing else "",
    ]


_TABLES: weakref.WeakKeyDictionary[LogStore, TableCache] = weakref.WeakKeyDictionary()


def tables_for(store: LogStore) -> TableCache:
    """The one table cache of ``store``, shared by the table's callbacks and the arrows' (one build per selection)."""
    tables = _TABLES.get(store)
    if tables is None:
        tables = _TABLES[store] = TableCache(store)
    return tables


def table_model(request: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The part of a block request that decides which rows show in which order; None when it is the default (no
    filter, the ranking's order)."""
    if not request:
        return None
    sort = [{"colId": entry.get("colId"), "sort": entry.get("sort")} for entry in request.get("sortModel") or []]
    filters = dict(request.get("filterModel") or {})
    if not filters and sort in ([], [{"colId": "rank", "sort": "asc"}]):
        return None
    return {"sortModel": sort, "filterModel": filters}


def table_position(store: LogStore, resolved: Resolved, model: Mapping[str, Any] | None) -> Position:
    """Where the resolved datapoint sits among the rows the table shows (its filter and sort, ``model``), and its
    neighbours there; the metric's ranking when the table has no filter or sort, or does not show this datapoint
    (opened from the score map or a link outside the filter)."""
    state = resolved.state
    assert state.idx is not None
    if model:
        loaded = tables_for(store).get(state)
        order = query(loaded.table, 0, loaded.table.num_rows, model.get("sortModel"), model.get("filterModel")).rows
        where = np.flatnonzero(order == state.idx)
        if where.size:
            pos = int(where[0])
            return Position(rank=pos + 1, total=len(order), prev_idx=int(order[pos - 1]) if pos > 0 else None,
                            next_idx=int(order[pos + 1]) if pos + 1 < len(order) else None, in_table=True)
    return position(resolved.scores, state.metric, state.idx)


def register(app: dash.Dash, store: LogStore) -> None:
    tables = tables_for(store)

    @app.callback(
        Output(ids.TABLE, "columnDefs"),
        Output(ids.TABLE, "style"),
        Input(ids.SELECTION, "data"),
        Input(ids.HEALTH_READY, "data"),
        State(ids.URL, "search"),
    )
    @guarded(lambda box: ([], no_update))  # the rows callback, reading the same store, shows the message
    def columns(selection: dict[str, Any] | None, _health: str | None = None,
                search: str | None = None) -> tuple[Any, Any]:
        """Columns and height for the selection; the rows come block by block from ``rows`` below. The health
        thresholds are the URL's, as the rows'."""
        if not selection:
            raise PreventUpdate
        try:
            thresholds = parse_query(search).health
        except ViewerError:  # a malformed link: the notice says so; the defaults, as the rows take
            thresholds = None
        loaded = tables.get(ViewState(run=selection["run"], split=selection["split"], step=selection["step"],
                                     metric=selection["metric"], health=thresholds))
        height = min(TABLE_MAX_HEIGHT, TABLE_CHROME_PX + TABLE_ROW_PX * max(loaded.scores.num_datapoints, 3))
        columns = table_columns(loaded.scores, loaded.metric, loaded.meta, loaded.health)
        return columns, {"height": f"{height}px", "width": "100%"}

    app.clientside_callback(
        ClientsideFunction(namespace="evalViewer", function_name="refreshTable"),
        Output(ids.TABLE, "scrollTo"),
        Input(ids.SELECTION, "data"),
        State(ids.TABLE, "id"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.TABLE, "getRowsResponse"),
        Output(ids.TABLE_CAPTION, "children"),
        Output(ids.TABLE_MODEL, "data"),
        Input(ids.TABLE, "getRowsRequest"),
        State(ids.URL, "search"),
        State(ids.TABLE_MODEL, "data"),
    )
    @guarded(lambda box: ({"rowData": [], "rowCount": 0}, box, no_update))
    def rows(request: dict[str, Any] | None, search: str | None, known: dict[str, Any] | None) -> tuple[Any, ...]:
        """One block of rows under the grid's sort and filter, and the caption with how many rows match.

        Every request gets an answer (an error answers with no rows): the grid asks for one block at a time, so a
        request left unanswered would stall the table for good. That is why the selection is resolved from the URL,
        which is there from the start, rather than read from ``SELECTION``, which may not be filled in yet when the
        grid first asks."""
        if not request:
            raise PreventUpdate  # the initial call: the grid has not asked for anything
        try:
            wanted = parse_query(search)
        except ViewerError:  # a malformed link: the notice says so, the table shows the defaults as the page does
            wanted = ViewState()
        state = resolve(store, wanted, strict=False).state
        loaded = tables.get(state)
        start = int(request.get("startRow") or 0)
        block = query(loaded.table, start, int(request.get("endRow") or start + BLOCK_ROWS),
                      request.get("sortModel"), request.get("filterModel"))
        log.debug("table rows %d-%d of %d (sort %s, filters %s)", start, start + len(block.rows), block.count,
                  request.get("sortModel"), request.get("filterModel"))
        response = {"rowData": row_dicts(loaded.table, block.rows), "rowCount": block.count}
        model = table_model(request)
        missing = store.missing_debug(state.pass_key) if state.run is not None else None
        return (response, table_caption(loaded.scores, loaded.metric, loaded.meta, block.count, missing or ()),
                model if model != known else no_update)

    @app.callback(
        Output(ids.URL, "search", allow_duplicate=True),
        Input(ids.TABLE, "cellClicked"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    def open_row(cell: dict[str, Any] | None, search: str | None) -> Any:
        """A click anywhere in a row opens that datapoint (the row id is its index)."""
        if not cell or cell.get("rowId") is None:
            raise PreventUpdate
        resolved = resolve(store, parse_query(search), strict=False)
        idx = int(cell["rowId"])
        if resolved.state.idx == idx:
            return no_update
        return to_query(with_idx(resolved.state, idx))
