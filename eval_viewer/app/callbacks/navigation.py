"""The URL and everything that moves it: the run/pass/metric selectors, ← → and "Overview", which view is shown.

The query string is the single source of truth. One callback keeps the selectors and the URL in step; it publishes
run/pass/metric to the ``SELECTION`` store only when they change (run, split, step, metric), so stepping through
datapoints never re-draws the overview or resets the table's filters, and a page opened on a datapoint publishes it
only when the overview is first shown (nothing hidden is drawn before it is needed). Clicks elsewhere (table, score
map, ← →) write the URL with ``allow_duplicate`` and this callback brings the selectors along. It writes the address
itself through ``URL_SET`` (``URL`` follows; ``URL_WRITTEN`` tells it its own echo), so the datapoint view, which
listens to ``URL``, is drawn without waiting for it (see :data:`..ids.URL_SET`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import dash
from dash import Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import error_box, guarded
from eval_viewer.app.compare_views import compare_nav, compare_step
from eval_viewer.app.callbacks.table import table_position
from eval_viewer.app.carry import carry_datapoint
from eval_viewer.app.state import (
    NO_SCORES,
    Resolved,
    ViewState,
    parse_pass_value,
    parse_query,
    pass_value,
    resolve,
    to_query,
    with_idx,
)
from eval_viewer.backend import LogStore, PassInfo, PassKey, RunInfo, Scores
from eval_viewer.errors import ViewerError
from eval_viewer.log_format import SPLIT_TRAIN

__all__ = ["register", "selection_of", "run_options", "pass_options", "metric_options"]

log = logging.getLogger(__name__)


def selection_of(state: ViewState) -> dict[str, Any]:
    """The overview's part of a state: what the ``SELECTION`` store holds."""
    return {"run": state.run, "split": state.split, "step": state.step, "metric": state.metric}


def run_options(runs: tuple[RunInfo, ...]) -> list[dict[str, Any]]:
    return [{"label": run.name, "value": run.name} for run in runs]


def pass_options(run: RunInfo, current: PassKey | None = None) -> list[dict[str, Any]]:
    """One option per scored evaluation pass (every epoch, then the test pass); passes without debug pages say so
    (their datapoint view has scores only).

    Training snapshots (split ``train``, one pass per snapshot step: hundreds in a long run) are left out while the
    run has another scored pass: they would bury its epochs, and the Training tab's slider reaches them. A run of
    snapshots alone lists the pass it opens on (its latest snapshot), and a snapshot the URL names (``current``) is
    listed too, so the selector shows what is open."""
    listed = [info for info in run.passes if info.has_scores and info.split != SPLIT_TRAIN]
    if not listed and run.passes:
        listed = [run.default_pass]
    if current is not None and current.split == SPLIT_TRAIN and all(info.key != current for info in listed):
        listed += [info for info in run.passes if info.key == current]
    return [{"label": info.label + _pass_note(info), "value": pass_value(info.split, info.step)} for info in listed]


def _pass_note(info: PassInfo) -> str:
    if not info.has_scores:
        return "  · no scores"
    return "" if info.has_debug else "  · scores only"


def metric_options(scores: Scores) -> list[dict[str, Any]]:
    return [
        {"label": f"{m}  {'↑' if scores.higher_is_better.get(m, True) else '↓'}", "value": m}
        for m in scores.metrics
    ]


def register(app: dash.Dash, store: LogStore) -> None:
    @app.callback(
        Output(ids.LOG_VERSION, "data"),
        Input(ids.RESCAN, "n_intervals"),
        State(ids.LOG_VERSION, "data"),
    )
    def rescan(_: int | None, known: str | None) -> str:
        """Publish the snapshot's version when it changed (the store renews it in the background); nothing
        otherwise. No disk is walked here."""
        version = store.version
        if version == known:
            raise PreventUpdate
        return version

    @app.callback(
        Output(ids.URL_SET, "search"),
        Output(ids.RUN, "options"),
        Output(ids.RUN, "value"),
        Output(ids.PASS, "options"),
        Output(ids.PASS, "value"),
        Output(ids.PASS, "disabled"),
        Output(ids.METRIC, "options"),
        Output(ids.METRIC, "value"),
        Output(ids.SELECTION, "data"),
        Output(ids.NOTICE, "children"),
        Output(ids.URL_WRITTEN, "data"),
        Input(ids.URL, "search"),
        Input(ids.RUN, "value"),
        Input(ids.PASS, "value"),
        Input(ids.METRIC, "value"),
        Input(ids.LOG_VERSION, "data"),
        State(ids.SELECTION, "data"),
        State(ids.URL_WRITTEN, "data"),
    )
    @guarded(lambda box: (no_update,) * 9 + (box, no_update))
    def sync(
        search: str | None, run: str | None, chosen_pass: str | None, metric: str | None, _version: Any,
        selection: dict[str, Any] | None, written: str | None,
    ) -> tuple[Any, ...]:
        """URL -> selectors on load/back/links; selector -> URL when the user picks something; new passes -> the
        selectors' options."""
        notice: Any = None
        new_search: Any = no_update
        trigger = ctx.triggered_id
        if trigger == ids.URL and written is not None and (search or "") == written:
            return (no_update,) * 10 + (None,)  # URL following what this callback wrote: done, notice included
        try:
            current: ViewState | None = parse_query(search)
        except ViewerError as err:
            notice, current = _bad_link(err), None
        if trigger in (ids.RUN, ids.PASS, ids.METRIC) and current is not None:
            split, step = (None, None) if trigger == ids.RUN else parse_pass_value(chosen_pass)
            wanted = ViewState(run=run, split=split, step=step, metric=metric, idx=current.idx, vs=current.vs,
                               attn=current.attn, health=current.health)  # an attention choice names an item, the
            # health thresholds are the user's: both hold in any pass
            resolved = resolve(store, wanted, strict=False)
            if trigger != ids.METRIC and current.idx is not None:
                resolved, notice = _carry(store, current, resolved)
            new_search = to_query(resolved.state) if to_query(resolved.state) != (search or "") else no_update
        else:
            try:
                if current is None:
                    raise ViewerError("unreadable link")  # already reported; fall through to the defaults
                resolved = resolve(store, current, strict=True)
            except ViewerError as err:
                # A link that names something not there is ignored as a whole (a metric that is not there must not
                # leave its run and datapoint half applied): the defaults open, and the URL says so too.
                notice = notice or _bad_link(err)
                resolved = resolve(store, ViewState(), strict=False)
                new_search = to_query(resolved.state)
        state = resolved.state
        options = pass_options(resolved.run, state.pass_key)
        if notice is None and resolved.scores is NO_SCORES:
            notice = _no_scores(resolved)
        new_selection = selection_of(state)
        # A page opened on a datapoint (a shared link) draws the overview when it is first shown: until then its
        # hidden figures and table would only take the browser's time. Once drawn, it is kept current (a table
        # that showed another run's rows for a moment on the way back could be clicked).
        publish = new_selection != selection and (state.idx is None or selection is not None)
        return (
            new_search,
            run_options(store.runs()),
            state.run,
            options,
            pass_value(state.split, state.step),
            len(options) < 2,
            metric_options(resolved.scores),
            state.metric,
            new_selection if publish else no_update,
            notice,
            new_search if new_search is not no_update else (None if written is not None else no_update),
        )

    @app.callback(
        Output(ids.URL, "search", allow_duplicate=True),
        Input(ids.PREV, "n_clicks"),
        Input(ids.NEXT, "n_clicks"),
        Input(ids.BACK, "n_clicks"),
        State(ids.URL, "search"),
        State(ids.TABLE_MODEL, "data"),
        prevent_initial_call=True,
    )
    def step(_prev: int | None, _next: int | None, _back: int | None, search: str | None,
             model: dict[str, Any] | None) -> str:
        """← / → move along the rows the failure table shows (its filter and sort; the worst-first ranking of the
        chosen metric when it has none); "Overview" drops the datapoint."""
        resolved = _lenient(store, search)
        if resolved is None or resolved.state.idx is None:
            raise PreventUpdate
        state = resolved.state
        if ctx.triggered_id == ids.BACK:
            return to_query(with_idx(state, None))
        if state.vs is not None:  # the paired view walks the compare list (its filter, worst regression first)
            target = compare_step(store, state, forward=ctx.triggered_id == ids.NEXT)
            if target is None:
                raise PreventUpdate
            return to_query(with_idx(state, target))
        where = table_position(store, resolved, model)
        target = where.prev_idx if ctx.triggered_id == ids.PREV else where.next_idx
        if target is None:
            raise PreventUpdate
        return to_query(with_idx(state, target))

    @app.callback(
        Output(ids.OVERVIEW_VIEW, "hidden"),
        Output(ids.DATAPOINT_VIEW, "hidden"),
        Output(ids.POSITION, "children"),
        Output(ids.PREV, "disabled"),
        Output(ids.NEXT, "disabled"),
        Input(ids.URL, "search"),
        State(ids.TABLE_MODEL, "data"),
    )
    @guarded(lambda box: (False, True, box, True, True))
    def show(search: str | None, model: dict[str, Any] | None) -> tuple[Any, ...]:
        """The datapoint view when the URL names a datapoint that exists, else the overview."""
        resolved = _lenient(store, search)
        if resolved is None or resolved.state.idx is None:
            return False, True, None, True, True
        state = resolved.state
        if state.vs is not None:
            return (True, False, *compare_nav(store, state))
        where = table_position(store, resolved, model)
        if where.in_table:
            label = [
                html.Span(f"#{state.idx}", className="ev-position-idx"),
                html.Span(f"row {where.rank} of {where.total}", className="ev-position-rank"),
                html.Span("in the table's filter and sort", className="ev-position-by"),
            ]
        else:
            label = [
                html.Span(f"#{state.idx}", className="ev-position-idx"),
                html.Span(f"rank {where.rank} of {where.total}", className="ev-position-rank"),
                html.Span(f"by {state.metric}, worst first" if state.metric else "in index order",
                          className="ev-position-by"),
            ]
        return True, False, label, where.prev_idx is None, where.next_idx is None


def _bad_link(err: ViewerError) -> Any:
    return error_box(f"{err}. The whole link was ignored; this is the default view.",
                     title="This link does not name a view")


def _no_scores(resolved: Resolved) -> Any:
    """The header's note for a pass saved without a scores file: nothing to rank, which is not an error."""
    info = resolved.run.find(resolved.state.split or "", resolved.state.step)
    if info.split == SPLIT_TRAIN:
        message = (f"Run {resolved.run.name!r}, {info.label}: a training snapshot saved without ground truth or "
                   f"predictions, so without scores. Its composites are in the Training tab.")
    else:
        message = (f"Run {resolved.run.name!r}, {info.label}: no scores file yet, so no metric to rank its "
                   f"datapoints by.")
    return html.Div([html.Div("No scores", className="ev-warning-title"),
                     html.Div(message, className="ev-warning-message")],
                    className="ev-warning ev-no-scores", role="status")


def _carry(store: LogStore, current: ViewState, resolved: Resolved) -> tuple[Resolved, Any]:
    """``resolved`` (the run or pass switched to) showing the datapoint of ``current`` only when it is the same one
    (:func:`~eval_viewer.app.carry.carry_datapoint`), and the note saying what happened otherwise."""
    try:
        before = resolve(store, current, strict=True).state
    except ViewerError:
        return replace(resolved, state=with_idx(resolved.state, None)), None
    carried = carry_datapoint(store, before, with_idx(resolved.state, None))
    note = html.Div([html.Div("Not the same datapoint" if carried.idx is None else "Same datapoint, another index",
                              className="ev-warning-title"),
                     html.Div(carried.note, className="ev-warning-message")],
                    className="ev-warning ev-carry-note", role="status") if carried.note else None
    return replace(resolved, state=with_idx(resolved.state, carried.idx)), note


def _lenient(store: LogStore, search: str | None) -> Resolved | None:
    """The state the URL names, falling back to defaults where it names something that is not there."""
    try:
        return resolve(store, parse_query(search), strict=False)
    except ViewerError as err:
        log.info("cannot resolve %r: %s", search, err)
        return None
