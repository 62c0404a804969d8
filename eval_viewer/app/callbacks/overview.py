"""The overview's run-level panels: the runs, the metric over epochs, the score distribution and the score map.

They re-draw when the selection (run, epoch, metric) changes, never when the user steps through datapoints. A click
on a score-map cell opens that datapoint.

The overview's panels with graphs and grids are put in the page the first time the overview is shown
(:func:`~eval_viewer.app.layout.overview_part`): at once on a page opened on the overview, only after "Overview" on a
page opened on a datapoint, which so never loads plotly.js or AG Grid's grid code before its datapoint is drawn. The
callbacks that fill those panels are the same either way: Dash calls those whose outputs a new part holds when it
mounts, with the selection as it is then.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import dash
from dash import ALL, ClientsideFunction, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import guarded
from eval_viewer.app.figures import distribution_figure, history_figure, score_map_figure
from eval_viewer.app.layout import overview_part
from eval_viewer.app.state import ViewState, parse_query, resolve, to_query, with_idx
from eval_viewer.backend import LogStore, PassKey
from eval_viewer.errors import ViewerError
from eval_viewer.log_format import SPLIT_TRAIN, SPLIT_VAL

__all__ = ["register", "runs_table"]

log = logging.getLogger(__name__)


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.4g}"


def runs_table(
    store: LogStore, metric: str | None, selected: str | None
) -> tuple[html.Table, dict[str, list[tuple[int | None, float]]]]:
    """A table of every run (name links to it) and the metric history of each, read once for both panels."""
    histories: dict[str, list[tuple[int | None, float]]] = {}
    rows = []
    for run in store.runs():
        history: list[tuple[int | None, float]] = []
        if metric is not None:
            try:
                split = SPLIT_VAL if SPLIT_VAL in run.splits else run.default_pass.split
                history = [(key.step, value) for key, value in store.metric_history(run.name, metric, split)]
            except ViewerError as err:  # this run lacks the metric: still listed, without a value
                log.debug("no %s history for %s: %s", metric, run.name, err)
        if history:
            histories[run.name] = history
        latest = history[-1][1] if history else None
        debug_epochs = sum(info.has_debug for info in run.passes if info.key.split != SPLIT_TRAIN)
        snapshots = sum(info.key.split == SPLIT_TRAIN for info in run.passes)  # the Training tab's, not passes
        epochs = "—" if SPLIT_VAL not in run.splits else f"{len(run.steps(SPLIT_VAL))}"
        rows.append(
            html.Tr(
                [
                    html.Td(dcc.Link(run.name, className="ev-run-link",  # keep the metric where the run has it
                                     href=to_query(ViewState(run=run.name, metric=metric if history else None)))),
                    html.Td(run.kind, className="ev-muted"),
                    html.Td(epochs, className="ev-num"),
                    html.Td(f"{debug_epochs}", className="ev-num"),
                    html.Td(f"{snapshots}" if snapshots else "—", className="ev-num"),
                    html.Td(_fmt(latest), className="ev-num"),
                ],
                className="ev-selected" if run.name == selected else None,
            )
        )
    head = html.Thead(html.Tr([html.Th("run"), html.Th("kind"), html.Th("epochs", className="ev-num"),
                               html.Th("with debug", className="ev-num"),
                               html.Th("snapshots", className="ev-num", title="training snapshot steps"),
                               html.Th(f"latest {metric or ''}".strip(), className="ev-num")]))
    return html.Table([head, html.Tbody(rows)], className="ev-runs-table"), histories


def register(app: dash.Dash, store: LogStore) -> None:
    app.clientside_callback(  # assets/overview.js: true once, when the overview is first shown
        ClientsideFunction(namespace="evalViewer", function_name="overviewShown"),
        Output(ids.OVERVIEW_MOUNTED, "data"),
        Input(ids.OVERVIEW_VIEW, "hidden"),
        State(ids.OVERVIEW_MOUNTED, "data"),
    )

    @app.callback(
        Output(ids.overview_slot(ALL), "children"),
        Input(ids.OVERVIEW_MOUNTED, "data"),
        State(ids.overview_slot(ALL), "id"),
        prevent_initial_call=True,
    )
    def mount_panels(shown: bool | None, slots: list[dict[str, Any]]) -> list[Any]:
        """The overview's panels, once: the first time the overview is shown."""
        if not shown:
            raise PreventUpdate
        return [overview_part(slot["name"]) for slot in slots]

    @app.callback(
        Output(ids.RUNS_TABLE, "children"),
        Output(ids.HISTORY, "figure"),
        Input(ids.SELECTION, "data"),
        Input(ids.LOG_VERSION, "data"),
    )
    @guarded(lambda box: (box, no_update))
    def runs_and_history(selection: dict[str, Any] | None, _version: Any) -> tuple[Any, Any]:
        """The runs table and the metric over epochs; redrawn when the selection changes or new passes appear."""
        if not selection:
            raise PreventUpdate
        table, histories = runs_table(store, selection["metric"], selection["run"])
        figure = history_figure(histories, selection["metric"] or "", selected_run=selection["run"],
                                selected_epoch=selection["step"] if selection["split"] == SPLIT_VAL else None)
        return table, figure

    @app.callback(
        Output(ids.DISTRIBUTION, "figure"),
        Output(ids.SCORE_MAP, "figure"),
        Input(ids.SELECTION, "data"),
    )
    def distribution_and_map(selection: dict[str, Any] | None) -> tuple[Any, Any]:
        if not selection or selection["metric"] is None:
            raise PreventUpdate
        try:
            scores = store.scores(PassKey(selection["run"], selection["split"], selection["step"]))
        except ViewerError as err:  # the selector already shows the message in the notice; keep the old figures
            log.info("no scores for %s: %s", selection, err)
            raise PreventUpdate from err
        metric = selection["metric"]
        values = scores.per_datapoint[metric]
        return (
            distribution_figure(values, metric, aggregated=scores.aggregated.get(metric)),
            score_map_figure(values, metric, higher_is_better=scores.higher_is_better.get(metric, True)),
        )

    @app.callback(
        Output(ids.URL, "search", allow_duplicate=True),
        Input(ids.SCORE_MAP, "clickData"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    def open_from_map(click: dict[str, Any] | None, search: str | None) -> str:
        """A click on a cell opens that datapoint (the cell's customdata is its index)."""
        points = (click or {}).get("points") or []
        if not points or points[0].get("customdata") is None:
            raise PreventUpdate
        idx = int(points[0]["customdata"])
        resolved = resolve(store, parse_query(search), strict=False)
        if not 0 <= idx < resolved.scores.num_datapoints:  # a padding cell after the last datapoint
            raise PreventUpdate
        return to_query(with_idx(resolved.state, idx))
