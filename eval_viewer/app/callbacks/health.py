"""The overview's health panel: the pass's layers × problems table, computed in the background, and its clicks.

The summary runs in :class:`~eval_viewer.backend.health_summary.HealthJobs` (one background thread per pass; the
result is cached on disk), polled by ``HEALTH_POLL`` while it runs, as the comparison summary is. For an epoch the
previous captured epoch of the run is summarised too, for its scale jumps. When the summary is done its job key goes
into ``HEALTH_READY``: the failure table then rebuilds its columns with the health flags and empties its block cache.
A click on a (layer, kind) count sets the failure table's filter to the datapoints with that problem at that layer,
so ← → walk exactly those (the arrows follow the table's filter).
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, ClientsideFunction, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import error_box, guarded
from eval_viewer.app.compare_views import progress_bar
from eval_viewer.app.dash_view import to_dash
from eval_viewer.app.failure_table import health_field
from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.health_summary import HealthJobs, previous_pass, scale_jump_rows
from eval_viewer.display.health import health_table
from eval_viewer.display.view import Text

__all__ = ["register", "table_filter"]


def table_filter(layer: str, kind: str) -> dict[str, Any]:
    """The failure table's filter model listing the datapoints with problem ``kind`` at ``layer``."""
    return {health_field(kind): {"filterType": "text", "type": "equals", "filter": layer}}  # one of its layers


def _cell_id(layer: str, kind: str) -> Any:
    return ids.health_cell(layer, kind) if kind != "scale_jump" else None  # the table has no scale-jump column


def register(app: dash.Dash, store: LogStore) -> None:
    jobs = HealthJobs.of(store)

    @app.callback(
        Output(ids.HEALTH_PROGRESS, "children"),
        Output(ids.HEALTH_BODY, "children"),
        Output(ids.HEALTH_POLL, "disabled"),
        Output(ids.HEALTH_JOB, "data"),
        Output(ids.HEALTH_READY, "data"),
        Input(ids.SELECTION, "data"),
        Input(ids.HEALTH_POLL, "n_intervals"),
        State(ids.HEALTH_JOB, "data"),
        State(ids.HEALTH_READY, "data"),
    )
    @guarded(lambda box: (box, [], True, no_update, no_update))
    def summary(selection: dict[str, Any] | None, _ticks: int | None, job: str | None,
                ready: str | None) -> tuple[Any, ...]:
        """Start (or join) the pass's summary, report progress until it is done, then draw the table."""
        if not selection:
            raise PreventUpdate
        key = PassKey(selection["run"], selection["split"], selection["step"])
        if not store.pass_info(key).has_debug:
            return [], to_dash(Text("This pass saved no debug outputs: nothing to check.", cls="ev-empty")), True, \
                None, no_update
        job_key = jobs.start(key)
        before = previous_pass(store, key)
        status = jobs.status(job_key)
        assert status is not None
        if not status.finished:
            return progress_bar(status.done, status.total, "checking"), no_update, False, job_key, no_update
        if status.error:
            return error_box(status.error), [], True, job_key, no_update
        assert status.summary is not None
        done = job_key if job_key != ready else no_update  # the table rebuilds its columns once per summary
        rows = status.summary.table()
        note = "from the cache" if status.cached else "done"
        if before is not None:
            previous = jobs.status(jobs.start(before))
            assert previous is not None
            if not previous.finished:
                return (progress_bar(previous.done, previous.total, f"{before.label}, for scale jumps"), no_update,
                        False, job_key, done)
            if previous.summary is not None:
                rows = rows + scale_jump_rows(previous.summary, status.summary)[0]
                note += f" · scale jumps against {before.label}"
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

    app.clientside_callback(  # the table's rows gain their health columns: ask for the blocks again
        ClientsideFunction(namespace="evalViewer", function_name="refreshTable"),
        Output(ids.TABLE, "scrollTo", allow_duplicate=True),
        Input(ids.HEALTH_READY, "data"),
        State(ids.TABLE, "id"),
        prevent_initial_call=True,
    )
