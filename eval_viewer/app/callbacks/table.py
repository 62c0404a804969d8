"""The failure table: every datapoint with every metric and the scalar meta_info fields, worst first.

Rows arrive already in the worst-first ranking of the chosen metric (the store's ranking, where NaN is always worst,
which a grid's own sort cannot do in both directions) with a ``rank`` column the grid sorts by; every other column
sorts and filters in the browser. Clicking a row opens its datapoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import dash
import numpy as np
from dash import Input, Output, State, html, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import guarded
from eval_viewer.app.state import parse_query, resolve, to_query, with_idx
from eval_viewer.backend import LogStore, Scores

__all__ = ["register", "table_columns", "table_rows", "metric_field", "meta_field"]

NUMBER_FORMAT = (
    "params.value == null ? 'NaN' : (Math.abs(params.value) >= 1e5 || (params.value != 0 && "
    "Math.abs(params.value) < 1e-3) ? d3.format('.3~e')(params.value) : d3.format('.4~f')(params.value))"
)
TABLE_ROW_PX = 28
TABLE_CHROME_PX = 110  # two header rows, the filter row, a scrollbar
TABLE_MAX_HEIGHT = 560


def _without_index_copy(meta: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Drop a meta field that only repeats the datapoint index (recorders often save ``idx``; the table has it) or
    that is empty everywhere."""
    return {name: values for name, values in meta.items()
            if not all(v is None or v == i for i, v in enumerate(values))}


def metric_field(scores: Scores, metric: str) -> str:
    """Row key of a metric column: short (it is repeated in every row sent to the browser) and prefixed, so a meta
    field cannot collide with a metric of the same name; the header shows the real name."""
    return f"m{scores.metrics.index(metric)}"


def meta_field(meta: Mapping[str, Sequence[Any]], name: str) -> str:
    return f"i{list(meta).index(name)}"


def _rounded(values: np.ndarray) -> list[float | None]:
    """Seven significant digits (what a table cell can show, half the JSON of a full float64); NaN, Inf -> null."""
    return [float(f"{v:.7g}") if math.isfinite(v) else None for v in values.tolist()]


def _min_width(header: str) -> int:
    """Enough pixels for the header text and the sort/filter icons, so no header is cut to "pixel_accu…"."""
    return max(90, 7 * len(header) + 48)


def _is_number_column(values: Sequence[Any]) -> bool:
    return all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)


def table_columns(scores: Scores, metric: str | None, meta: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """rank, idx, a "Scores" group (chosen metric first) and a "Meta info" group."""
    number = {"filter": "agNumberColumnFilter", "type": "rightAligned",
              "valueFormatter": {"function": NUMBER_FORMAT}, "cellClassRules": {"ev-cell-nan": "params.value == null"}}
    ordered = ([metric] if metric else []) + [m for m in scores.metrics if m != metric]
    metric_cols = []
    for m in ordered:
        arrow = "↑" if scores.higher_is_better.get(m, True) else "↓"
        metric_cols.append({
            "field": metric_field(scores, m), "headerName": f"{m} {arrow}", "headerTooltip":
            f"{m}: {'higher' if arrow == '↑' else 'lower'} is better", "minWidth": _min_width(f"{m} {arrow}"),
            **number,
            **({"cellClass": "ev-col-chosen", "headerClass": "ev-col-chosen"} if m == metric else {}),
        })
    columns: list[dict[str, Any]] = [
        {"field": "rank", "headerName": "rank", "sort": "asc", "pinned": "left", "width": 80, "minWidth": 70,
         "filter": "agNumberColumnFilter", "headerTooltip": f"position in the worst-first ranking by {metric}"},
        {"field": "idx", "headerName": "idx", "pinned": "left", "width": 80, "minWidth": 70,
         "filter": "agNumberColumnFilter", "cellClass": "ev-cell-idx"},
        {"headerName": "Scores", "children": metric_cols},
    ]
    if meta:
        meta_cols = []
        for name, values in meta.items():
            col: dict[str, Any] = {"field": meta_field(meta, name), "headerName": name, "minWidth": _min_width(name)}
            col.update({"filter": "agNumberColumnFilter", "type": "rightAligned"} if _is_number_column(values)
                       else {"filter": "agTextColumnFilter"})
            meta_cols.append(col)
        columns.append({"headerName": "Meta info", "children": meta_cols})
    return columns


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_value(value.item())
    return value


def table_rows(scores: Scores, metric: str | None, meta: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """One dict per datapoint, in ranking order; NaN becomes null (shown as "NaN")."""
    order = scores.ranking(metric, worst_first=True) if metric else np.arange(scores.num_datapoints)
    columns: dict[str, list[Any]] = {metric_field(scores, m): _rounded(scores.per_datapoint[m]) for m in scores.metrics}
    columns.update({meta_field(meta, name): list(values) for name, values in meta.items()})
    rows = []
    for rank, idx in enumerate(order.tolist(), start=1):
        row: dict[str, Any] = {"rank": rank, "idx": idx}
        for field, values in columns.items():
            row[field] = _json_value(values[idx]) if idx < len(values) else None
        rows.append(row)
    return rows


def register(app: dash.Dash, store: LogStore) -> None:
    @app.callback(
        Output(ids.TABLE, "rowData"),
        Output(ids.TABLE, "columnDefs"),
        Output(ids.TABLE, "style"),
        Output(ids.TABLE_CAPTION, "children"),
        Input(ids.SELECTION, "data"),
    )
    @guarded(lambda box: ([], [], no_update, box))
    def fill(selection: dict[str, Any] | None) -> tuple[Any, Any, Any, Any]:
        if not selection:
            raise PreventUpdate
        run, epoch, metric = selection["run"], selection["epoch"], selection["metric"]
        scores = store.scores(run, epoch)
        meta = _without_index_copy(store.meta_table(run, epoch))
        direction = "lower" if scores.higher_is_better.get(metric, True) else "higher"
        n_nan = int(np.isnan(scores.per_datapoint[metric]).sum()) if metric else 0
        caption = [
            html.B(f"{scores.num_datapoints:,}"), " datapoints · ranked by ", html.B(metric or "index"),
            f", worst ({direction}) first" if metric else "",
            f" · {n_nan} NaN ranked worst" if n_nan else "",
            f" · {len(meta)} meta fields" if meta else "",
        ]
        height = min(TABLE_MAX_HEIGHT, TABLE_CHROME_PX + TABLE_ROW_PX * max(scores.num_datapoints, 3))
        style = {"height": f"{height}px", "width": "100%"}
        return table_rows(scores, metric, meta), table_columns(scores, metric, meta), style, caption

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
