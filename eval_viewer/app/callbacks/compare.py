"""Comparing two passes: the "vs" selectors ⇄ the URL, the delta table and map, the layer × head summary with its
progress, and the paired datapoint view; and the common failures of any passes the user picks (list and map, a click
opens the datapoint in a pass).

The pass-wide summary runs in :class:`~eval_viewer.backend.summary.SummaryJobs` (one background thread; the result is
cached on disk under the store's cache dir) and the page polls it with a ``dcc.Interval`` while it runs. We chose
that over Dash background callbacks: those need a cache manager (diskcache or Celery) and run each call in a fresh
process that would have to re-open the logs, and their result belongs to one browser tab; a thread in the server
shares the store's page cache, lets every tab asking for the same pair of passes join one computation, and needs no
new dependency.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import error_box, guarded
from eval_viewer.app.callbacks.navigation import pass_options, run_options
from eval_viewer.app.compare_state import CompareState, at_least, parse_pass_token, pass_token, vs_pass
from eval_viewer.app.compare_views import (
    FAIL_MAP_ROWS,
    delta_caption,
    delta_map_figure,
    delta_rows,
    deltas_of,
    failure_caption,
    failure_columns,
    failure_map_figure,
    failure_rows,
    failures_of,
    pass_options_all,
    progress_bar,
    summary_notes,
    summary_rows,
    worst_list,
)
from eval_viewer.app.dash_view import to_dash
from eval_viewer.app.state import ViewState, parse_pass_value, parse_query, pass_value, resolve, to_query, with_idx
from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.compare import compare_items
from eval_viewer.backend.summary import SummaryJobs
from eval_viewer.display.paired import paired_view
from eval_viewer.errors import NotFoundError, ViewerError

__all__ = ["register"]


def _selection(store: LogStore, search: str | None) -> dict[str, Any] | None:
    state = resolve(store, parse_query(search), strict=False).state
    if state.vs is None:
        return None
    b = vs_pass(store, state.vs)
    vs = state.vs
    return {"a": [state.run, state.split, state.step], "b": [b.run, b.split, b.step], "metric": state.metric,
            "align": vs.align, "filter": vs.filter, "change": vs.change, "good": vs.good, "bad": vs.bad}


def _state_of(selection: dict[str, Any]) -> Any:
    """A ViewState (no datapoint) of a COMPARE_SELECTION."""
    b = selection["b"]
    vs = CompareState(b[0], b[1], b[2], selection["align"], selection["filter"], selection["change"],
                      selection["good"], selection["bad"])
    a = selection["a"]
    return ViewState(run=a[0], split=a[1], step=a[2], metric=selection["metric"], vs=vs)


def register(app: dash.Dash, store: LogStore) -> None:
    jobs = SummaryJobs(store)

    @app.callback(
        Output(ids.URL, "search", allow_duplicate=True),
        Output(ids.VS_RUN, "options"),
        Output(ids.VS_RUN, "value"),
        Output(ids.VS_PASS, "options"),
        Output(ids.VS_PASS, "value"),
        Output(ids.VS_PASS, "disabled"),
        Output(ids.ALIGN_BY, "options"),
        Output(ids.ALIGN_BY, "value"),
        Output(ids.DELTA_FILTER, "value"),
        Output(ids.CHANGE, "value"),
        Output(ids.GOOD, "value"),
        Output(ids.BAD, "value"),
        Output(ids.COMPARE_SELECTION, "data"),
        Output(ids.COMPARE_BOX, "hidden"),
        Input(ids.URL, "search"),
        Input(ids.VS_RUN, "value"),
        Input(ids.VS_PASS, "value"),
        Input(ids.ALIGN_BY, "value"),
        Input(ids.DELTA_FILTER, "value"),
        Input(ids.CHANGE, "value"),
        Input(ids.GOOD, "value"),
        Input(ids.BAD, "value"),
        Input(ids.LOG_VERSION, "data"),
        State(ids.COMPARE_SELECTION, "data"),
        prevent_initial_call="initial_duplicate",
    )
    @guarded(lambda box: (no_update,) * 14)
    def sync(search: str | None, vs_run: str | None, vs_pass_value: str | None, align: str | None,
             which: str | None, change: float | None, good: float | None, bad: float | None, _version: Any,
             known: dict[str, Any] | None) -> tuple[Any, ...]:
        """The comparison part of the URL ⇄ the controls (one callback: Dash allows a component as input and output
        of one callback, not of two)."""
        trigger = ctx.triggered_id
        state = resolve(store, parse_query(search), strict=False).state
        new_search: Any = no_update
        if trigger in (ids.VS_RUN, ids.VS_PASS, ids.ALIGN_BY, ids.DELTA_FILTER, ids.CHANGE, ids.GOOD, ids.BAD):
            vs = None
            if vs_run:
                split, step = (None, None) if trigger == ids.VS_RUN else parse_pass_value(vs_pass_value)
                vs = CompareState(vs_run, split, step, align or None, which or "all", change, good, bad,
                                  state.vs.focus if state.vs is not None else None)
                b = vs_pass(store, vs)  # the URL names the pass itself, not "the run's default"
                vs = replace(vs, split=b.split, step=b.step)
            wanted = to_query(replace(state, vs=vs))
            if wanted != (search or ""):
                new_search = wanted
            state = replace(state, vs=vs)
        vs = state.vs
        run_opts = run_options(store.runs())
        if vs is None:
            return (new_search, run_opts, None, [], None, True, [], None, "all", None, None, None,
                    None if known is not None else no_update, True)
        b = vs_pass(store, vs)
        options = pass_options(store.run(b.run), b)  # b listed even where the run's list leaves it out (a snapshot)
        meta = list(store.meta_table(state.pass_key))
        selection = _selection(store, to_query(state))
        return (new_search, run_opts, b.run, options, pass_value(b.split, b.step), len(options) < 2,
                [{"label": k, "value": k} for k in meta], vs.align, vs.filter, vs.change, vs.good, vs.bad,
                selection if selection != known else no_update, False)

    # Two callbacks on the same (cached) deltas: the table and map are mounted when the overview is first shown, the
    # caption and thresholds are there from the start (the "vs" selectors' callback reads them).
    @app.callback(
        Output(ids.COMPARE_CAPTION, "children"),
        Output(ids.CHANGE, "placeholder"),
        Output(ids.GOOD, "placeholder"),
        Output(ids.BAD, "placeholder"),
        Input(ids.COMPARE_SELECTION, "data"),
    )
    @guarded(lambda box: (box, None, None, None))
    def describe_deltas(selection: dict[str, Any] | None) -> tuple[Any, ...]:
        if not selection:
            raise PreventUpdate
        state = _state_of(selection)
        d = deltas_of(store, state)
        t = d.thresholds
        b = PassKey.of(selection["b"])
        return delta_caption(d, str(state.pass_key), str(b)), f"{t.change:.3g}", f"{t.good:.3g}", f"{t.bad:.3g}"

    @app.callback(
        Output(ids.DELTA_TABLE, "rowData"),
        Output(ids.DELTA_MAP, "figure"),
        Input(ids.COMPARE_SELECTION, "data"),
    )
    @guarded(lambda box: ([], no_update))  # describe_deltas shows the message
    def draw_deltas(selection: dict[str, Any] | None) -> tuple[Any, ...]:
        if not selection:
            raise PreventUpdate
        d = deltas_of(store, _state_of(selection))
        return delta_rows(d, selection["filter"]), delta_map_figure(d)

    @app.callback(
        Output(ids.SUMMARY_PROGRESS, "children"),
        Output(ids.SUMMARY_TABLE, "rowData"),
        Output(ids.SUMMARY_POLL, "disabled"),
        Output(ids.SUMMARY_JOB, "data"),
        Output(ids.WORST_LIST, "children"),
        Input(ids.COMPARE_SELECTION, "data"),
        Input(ids.SUMMARY_POLL, "n_intervals"),
        State(ids.SUMMARY_JOB, "data"),
    )
    @guarded(lambda box: (box, no_update, True, no_update, no_update))
    def summary(selection: dict[str, Any] | None, _ticks: int | None, job: str | None) -> tuple[Any, ...]:
        """Start (or join) the background summary of the chosen pair, then report its progress until it is done."""
        if not selection:
            raise PreventUpdate
        if ctx.triggered_id == ids.COMPARE_SELECTION or job is None:  # or mounted with the overview
            key = jobs.start(PassKey.of(selection["a"]), PassKey.of(selection["b"]), selection["align"])
            worst: Any = []
        else:
            key, worst = job, no_update
        status = jobs.status(key) if key else None
        if status is None:
            raise PreventUpdate
        new_job = key if key != job else no_update
        if not status.finished:
            return progress_bar(status.done, status.total, "comparing internals"), no_update, False, new_job, worst
        if status.error:
            return error_box(status.error), [], True, new_job, worst
        assert status.summary is not None
        note = "from the cache" if status.cached else "done"
        shown = html.Div([progress_bar(status.done, status.total, note), summary_notes(status.summary)])
        return shown, summary_rows(status.summary), True, new_job, worst

    @app.callback(
        Output(ids.WORST_LIST, "children", allow_duplicate=True),
        Input(ids.SUMMARY_TABLE, "cellClicked"),
        State(ids.SUMMARY_JOB, "data"),
        prevent_initial_call=True,
    )
    @guarded(lambda box: box)
    def worst(cell: dict[str, Any] | None, job: str | None) -> Any:
        """A click on a layer × head row lists the datapoints where it diverges most."""
        if not cell or not cell.get("rowId") or not job:
            raise PreventUpdate
        status = jobs.status(job)
        if status is None or status.summary is None:
            raise PreventUpdate
        layer, _, head = str(cell["rowId"]).rpartition("#")
        return worst_list(status.summary, layer, int(head) if head else None)

    @app.callback(
        Output(ids.URL, "search", allow_duplicate=True),
        Input(ids.DELTA_TABLE, "cellClicked"),
        Input(ids.DELTA_MAP, "clickData"),
        Input({"type": ids.WORST_TYPE, "idx": ALL, "focus": ALL}, "n_clicks"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    def open_pair(cell: dict[str, Any] | None, click: dict[str, Any] | None, _clicks: list[int | None],
                  search: str | None) -> Any:
        """A delta row, a delta-map cell or a worst datapoint opens the paired view (on that card for the last)."""
        state = resolve(store, parse_query(search), strict=False).state
        if state.vs is None:
            raise PreventUpdate
        trigger = ctx.triggered_id
        focus = None
        if trigger == ids.DELTA_TABLE:
            if not cell or cell.get("rowId") is None:
                raise PreventUpdate
            idx = int(cell["rowId"])
        elif trigger == ids.DELTA_MAP:
            points = (click or {}).get("points") or []
            if not points or points[0].get("customdata") in (None, -1):
                raise PreventUpdate
            idx = int(points[0]["customdata"])
        else:
            if not isinstance(trigger, dict) or not ctx.triggered[0].get("value"):
                raise PreventUpdate  # the list was (re)drawn, nothing was clicked
            idx, focus = int(trigger["idx"]), str(trigger["focus"])
        wanted = to_query(with_idx(replace(state, vs=replace(state.vs, focus=focus)), idx))
        return wanted if wanted != search else no_update

    @app.callback(
        Output(ids.PAIRED_BODY, "children"),
        Input(ids.URL, "search"),
    )
    @guarded(lambda box: box)
    def paired(search: str | None) -> Any:
        """The paired view of the datapoint the URL names (pass a) and its partner in the vs pass."""
        state = parse_query(search)
        if state.idx is None or state.vs is None:
            return []
        state = resolve(store, state, strict=True).state
        assert state.vs is not None and state.idx is not None
        d = deltas_of(store, state)
        b = vs_pass(store, state.vs)
        partner = d.alignment.b_of(state.idx)
        if partner is None:
            raise NotFoundError(f"Datapoint {state.idx} of {state.pass_key} has no partner in {b}"
                                + (f" (aligned by {d.alignment.by})" if d.alignment.by else ""))
        ra, rb = store.datapoint(state.pass_key, state.idx), store.datapoint(b, partner)
        hib = store.scores(state.pass_key).higher_is_better
        node = paired_view(ra, rb, state.metric, hib, internals=compare_items(ra, rb), focus=state.vs.focus)
        return to_dash(node)

    _register_common_failures(app, store)


def _register_common_failures(app: dash.Dash, store: LogStore) -> None:
    """The common-failures panel: its pass picker, the list and map, and opening a datapoint from either."""

    @app.callback(
        Output(ids.FAIL_PASSES, "options"),
        Output(ids.FAIL_PASSES, "value"),
        Input(ids.LOG_VERSION, "data"),
        Input(ids.COMPARE_SELECTION, "data"),
        State(ids.FAIL_PASSES, "value"),
    )
    @guarded(lambda box: (no_update, no_update))
    def failure_passes(_version: Any, selection: dict[str, Any] | None, chosen: list[str] | None) -> tuple[Any, Any]:
        """Every scored pass to pick from; while none is picked, the two passes being compared."""
        value: Any = no_update
        if not chosen and selection:
            value = [pass_token(PassKey.of(selection["a"])), pass_token(PassKey.of(selection["b"]))]
        return pass_options_all(store), value

    @app.callback(
        Output(ids.FAIL_TABLE, "columnDefs"),
        Output(ids.FAIL_TABLE, "rowData"),
        Output(ids.FAIL_MAP, "figure"),
        Output(ids.FAIL_CAPTION, "children"),
        Output(ids.FAIL_RESULT, "hidden"),
        Output(ids.FAIL_OPTIONS, "hidden"),
        Input(ids.FAIL_PASSES, "value"),
        Input(ids.FAIL_PERCENTILE, "value"),
        Input(ids.FAIL_AT_LEAST, "value"),
        Input(ids.SELECTION, "data"),
    )
    @guarded(lambda box: (no_update, [], no_update, box, True, no_update))
    def failures(tokens: list[str] | None, percentile: float | None, which: str | None,
                 selection: dict[str, Any] | None) -> tuple[Any, ...]:
        """The datapoints failing in at least the chosen share of the picked passes, for the header's metric."""
        metric = (selection or {}).get("metric")
        keys = [parse_pass_token(t) for t in tokens or []]
        if len(keys) < 2 or not metric:
            hint = "Pick two or more passes (runs or epochs) to see the datapoints that fail in most of them."
            return no_update, [], no_update, hint, True, len(keys) < 2
        cf, table, higher = failures_of(store, keys, str(metric), float(percentile or 25))
        minimum = at_least(which or "most", len(keys))
        rows = failure_rows(cf, table, minimum)
        shown = [row["idx"] for row in rows[:FAIL_MAP_ROWS]]
        figure = failure_map_figure(cf, keys, table, shown)
        return (failure_columns(keys), rows, figure, failure_caption(cf, keys, minimum, len(rows), higher),
                not rows, False)

    @app.callback(
        Output(ids.URL, "search", allow_duplicate=True),
        Input(ids.FAIL_TABLE, "cellClicked"),
        Input(ids.FAIL_MAP, "clickData"),
        State(ids.FAIL_TABLE, "rowData"),
        State(ids.FAIL_PASSES, "value"),
        State(ids.SELECTION, "data"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    def open_failure(cell: dict[str, Any] | None, click: dict[str, Any] | None, rows: list[dict[str, Any]] | None,
                     tokens: list[str] | None, selection: dict[str, Any] | None, search: str | None) -> Any:
        """A row opens the datapoint in the first pass it fails in; a pass's cell, or a cell of the map, in that
        pass."""
        keys = [parse_pass_token(t) for t in tokens or []]
        if ctx.triggered_id == ids.FAIL_TABLE:
            if not isinstance(cell, dict) or cell.get("rowId") is None:
                raise PreventUpdate
            idx = int(cell["rowId"])
            column = str(cell.get("colId") or "")
            row = next((r for r in rows or [] if r.get("idx") == idx), {})
            if column.startswith("p") and column[1:].isdigit():
                position = int(column[1:])
            else:
                position = next((k for k in range(len(keys)) if row.get(f"f{k}")), 0)
        else:
            points = (click if isinstance(click, dict) else {}).get("points") or []
            if not points or not isinstance(points[0].get("customdata"), list):
                raise PreventUpdate
            idx, position = (int(v) for v in points[0]["customdata"])
        if not 0 <= position < len(keys):
            raise PreventUpdate
        key = keys[position]
        metric = (selection or {}).get("metric")
        try:
            health = parse_query(search).health  # the user's health thresholds hold in any pass
        except ViewerError:
            health = None
        wanted = to_query(ViewState(run=key.run, split=key.split, step=key.step, metric=metric, idx=idx,
                                    health=health))
        return wanted if wanted != search else no_update
