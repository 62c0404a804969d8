"""The overview's health panel: the pass's layers × problems table, computed in the background, and its clicks.

The summary runs in :class:`~eval_viewer.backend.health_summary.HealthJobs` (one background thread per pass; the
result is cached on disk), polled by ``HEALTH_POLL`` while it runs, as the comparison summary is. For an epoch the
previous captured epoch of the run is summarised too, for its scale jumps. When the summary is done its job key goes
into ``HEALTH_READY`` (and again, marked, once the previous epoch's is done too): the failure table then rebuilds its
columns with the health flags (scale jumps included) and empties its block cache.
A click on a (layer, kind) count sets the failure table's filter to the datapoints with that problem at that layer,
so ← → walk exactly those (the arrows follow the table's filter).

The thresholds live in the URL (``health_dead=...``, :mod:`eval_viewer.app.health_state`); :func:`register`'s
``thresholds`` keeps the panel's inputs and the URL in step and publishes the changed ones to ``HEALTH_THRESHOLDS``,
which the summary listens to (the overview's other panels do not redraw for a threshold). The failure table and the
datapoint view read them from the URL, so all three flag with the same thresholds. A value that is not one is refused
where it was typed, with the reason, and changes nothing.

A summary that finishes while a datapoint is open (the user opened one from the table while it ran) fills in that
view's card badges again (``badges``): the flags only the whole pass knows (channels dead on every datapoint, a head
far below its typical entropy) appear on their cards; nothing else of the view is drawn again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import dash
from dash import ALL, ClientsideFunction, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import error_box, guarded
from eval_viewer.app.compare_views import progress_bar
from eval_viewer.app.dash_view import to_dash
from eval_viewer.app.failure_table import health_field
from eval_viewer.app.health_state import TUNABLE, check, input_values, overrides, thresholds_of
from eval_viewer.app.state import parse_query, resolve, to_query
from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.health_summary import HealthJobs, datapoint_flags, previous_pass, scale_jump_rows
from eval_viewer.display.health import flags_by_debugger, health_badges, health_table
from eval_viewer.display.view import Text
from eval_viewer.errors import ViewerError

__all__ = ["register", "table_filter", "typed_thresholds"]


def table_filter(layer: str, kind: str) -> dict[str, Any]:
    """The failure table's filter model listing the datapoints with problem ``kind`` at ``layer``."""
    return {health_field(kind): {"filterType": "text", "type": "equals", "filter": layer}}  # one of its layers


def _cell_id(layer: str, kind: str) -> Any:
    return ids.health_cell(layer, kind)


def _badges(flags: Any) -> Any:
    node = health_badges(flags)
    return to_dash(node) if node is not None else []


def typed_thresholds(typed: dict[str, Any]) -> tuple[dict[str, float | None], list[str]]:
    """The thresholds typed in the panel (field -> text) as values (None: empty, the default), and why any of them
    is refused (empty when all are good)."""
    values: dict[str, float | None] = {}
    errors = []
    for field, raw in typed.items():
        try:
            values[field] = check(field, raw)
        except ValueError as err:
            errors.append(str(err))
    return values, errors


def register(app: dash.Dash, store: LogStore) -> None:
    jobs = HealthJobs.of(store)

    @app.callback(
        Output(ids.URL, "search", allow_duplicate=True),
        Output(ids.health_threshold(ALL), "value"),
        Output(ids.HEALTH_THRESHOLD_MESSAGE, "children"),
        Output(ids.HEALTH_THRESHOLDS, "data"),
        Input(ids.URL, "search"),
        Input(ids.health_threshold(ALL), "value"),
        Input(ids.HEALTH_THRESHOLD_RESET, "n_clicks"),
        State(ids.HEALTH_THRESHOLDS, "data"),
        prevent_initial_call="initial_duplicate",
    )
    @guarded(lambda box: (no_update, [no_update] * len(ctx.outputs_list[1]), box, no_update))
    def thresholds(search: str | None, typed: list[Any], _reset: int | None,
                   known: dict[str, float] | None) -> tuple[Any, ...]:
        """The thresholds in the URL ⇄ the panel's inputs (one callback: Dash allows a component as input and output
        of one callback, not of two); the URL's changed ones -> ``HEALTH_THRESHOLDS`` when they change."""
        fields = [out["id"]["field"] for out in ctx.outputs_list[1]]
        try:
            state = parse_query(search)
        except ViewerError:
            raise PreventUpdate from None  # the header's notice says what is wrong; the URL is rewritten to defaults
        trigger = ctx.triggered_id
        new_search: Any = no_update
        if trigger == ids.HEALTH_THRESHOLD_RESET or isinstance(trigger, dict):
            typed_values, errors = typed_thresholds({} if trigger == ids.HEALTH_THRESHOLD_RESET
                                                    else dict(zip(fields, typed)))
            if errors:
                return no_update, [no_update] * len(fields), "; ".join(errors) + ". Nothing was changed.", no_update
            chosen = thresholds_of(typed_values)
            state = replace(state, health=chosen if overrides(chosen) else None)
            wanted = to_query(state)
            new_search = wanted if wanted != (search or "") else no_update
        changed = overrides(state.health)
        shown = dict(zip((t.field for t in TUNABLE), input_values(state.health)))
        values = [shown.get(f, "") for f in fields]
        if trigger == ids.URL and values == [v or "" for v in typed]:  # a step through datapoints: nothing to redo
            return no_update, [no_update] * len(fields), no_update, changed if changed != known else no_update
        return new_search, values, None, changed if changed != known else no_update

    @app.callback(
        Output(ids.HEALTH_PROGRESS, "children"),
        Output(ids.HEALTH_BODY, "children"),
        Output(ids.HEALTH_POLL, "disabled"),
        Output(ids.HEALTH_JOB, "data"),
        Output(ids.HEALTH_READY, "data"),
        Input(ids.SELECTION, "data"),
        Input(ids.HEALTH_THRESHOLDS, "data"),
        Input(ids.HEALTH_POLL, "n_intervals"),
        State(ids.HEALTH_JOB, "data"),
        State(ids.HEALTH_READY, "data"),
    )
    @guarded(lambda box: (box, [], True, no_update, no_update))
    def summary(selection: dict[str, Any] | None, chosen: dict[str, float] | None, _ticks: int | None,
                job: str | None, ready: str | None) -> tuple[Any, ...]:
        """Start (or join) the pass's summary under the chosen thresholds, report progress until it is done, then
        draw the table. While it runs, ``HEALTH_READY`` is emptied: the table drops the health columns of other
        thresholds rather than show them beside rows flagged with these."""
        if not selection or chosen is None:  # the thresholds are published from the URL with the selection
            raise PreventUpdate
        key = PassKey(selection["run"], selection["split"], selection["step"])
        if not store.pass_info(key).has_debug:
            return [], to_dash(Text("This pass saved no debug outputs: nothing to check.", cls="ev-empty")), True, \
                None, no_update
        t = thresholds_of(chosen)
        job_key = jobs.start(key, t)
        before = previous_pass(store, key)
        status = jobs.status(job_key)
        assert status is not None
        if not status.finished:
            return (progress_bar(status.done, status.total, "checking"), no_update, False, job_key,
                    None if ready is not None else no_update)
        if status.error:
            return error_box(status.error), [], True, job_key, no_update
        assert status.summary is not None
        done = job_key if job_key != ready else no_update  # the table rebuilds its columns once per summary
        rows = status.summary.table()
        note = "from the cache" if status.cached else "done"
        if chosen:
            note += " · changed thresholds: " + ", ".join(f"{tun.name} {v:g}" for tun in TUNABLE
                                                          if (v := chosen.get(tun.field)) is not None)
        if before is not None:
            previous = jobs.status(jobs.start(before, t))
            assert previous is not None
            if not previous.finished:
                return (progress_bar(previous.done, previous.total, f"{before.label}, for scale jumps"), no_update,
                        False, job_key, done)
            if previous.summary is not None:
                rows = rows + scale_jump_rows(previous.summary, status.summary)[0]
                note += f" · scale jumps against {before.label}"
                with_jumps = f"{job_key}+{before.label}"  # the table gains its scale-jump column
                done = with_jumps if with_jumps != ready else no_update
        body = health_table(rows, int(status.summary.idx.size), notes=status.summary.notes, cell_id=_cell_id)
        return progress_bar(status.done, status.total, note), to_dash(body), True, job_key, done

    @app.callback(
        Output(ids.TABLE, "filterModel"),
        Input(ids.health_cell(ALL, ALL), "n_clicks"),
        prevent_initial_call=True,
    )
    def filter_table(_clicks: list[int | None]) -> Any:
        """A (layer, kind) count lists its datapoints in the failure table."""
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict) or not ctx.triggered[0].get("value"):
            raise PreventUpdate  # the table was (re)drawn, nothing was clicked
        return table_filter(str(trigger["layer"]), str(trigger["kind"]))

    @app.callback(
        Output(ids.card_badges(ALL), "children"),
        Input(ids.HEALTH_READY, "data"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    @guarded(lambda box: [no_update] * len(ctx.outputs_list))
    def badges(ready: str | None, search: str | None) -> list[Any]:
        """The open datapoint's card badges with its pass's summary, which just finished (under the URL's
        thresholds; another pass's or other thresholds' summary changes nothing)."""
        slots = [out["id"]["debugger"] for out in ctx.outputs_list]
        if not ready or not slots:
            raise PreventUpdate  # a new summary started, or no datapoint view is open
        try:
            state = resolve(store, parse_query(search), strict=True).state
        except ViewerError:
            raise PreventUpdate from None  # the view says what is wrong with the link
        if state.idx is None or state.vs is not None or jobs.ready(state.pass_key, state.health) is None:
            raise PreventUpdate
        record = store.datapoint(state.pass_key, state.idx)
        cards = flags_by_debugger(datapoint_flags(store, state.pass_key, record, jobs, state.health))
        return [_badges(cards.get(name, ())) for name in slots]

    app.clientside_callback(  # the table's rows gain their health columns: ask for the blocks again
        ClientsideFunction(namespace="evalViewer", function_name="refreshTable"),
        Output(ids.TABLE, "scrollTo", allow_duplicate=True),
        Input(ids.HEALTH_READY, "data"),
        State(ids.TABLE, "id"),
        prevent_initial_call=True,
    )
