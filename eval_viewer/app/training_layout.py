"""The Training tab's static parts: the "Evaluation | Training" switch and the view of training snapshots.

The switch shows only for a run that has training snapshots (split ``train``, written by
:class:`eval_viewer.debuggers.snapshots.SnapshotWriter`) and scores (a run of snapshots saved without any has nothing
to evaluate: it shows the Training view alone); the view holds a slider over the snapshot steps, the chosen
step's composites, and one datapoint across a few chosen steps side by side. Callbacks
(:mod:`eval_viewer.app.callbacks.training`) fill them in and keep them live while training writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dash import dcc, html

from eval_viewer.app import ids
from eval_viewer.app.state import EVALUATION, TRAINING

__all__ = ["view_tabs", "training_view"]


def view_tabs() -> html.Div:
    """Tabs over the main area; hidden until the selected run has training snapshots."""
    tabs = dcc.Tabs(
        id=ids.VIEW_TABS,
        value=EVALUATION,
        children=[dcc.Tab(label="Evaluation", value=EVALUATION, className="ev-tab", selected_className="ev-tab-on"),
                  dcc.Tab(label="Training", value=TRAINING, className="ev-tab", selected_className="ev-tab-on")],
        className="ev-tabs",
        parent_className="ev-tabs-parent",
    )
    return html.Div(tabs, id=ids.VIEW_TABS_BOX, className="ev-view-tabs", hidden=True)


def training_view(panel: Callable[..., Any]) -> html.Div:
    """The Training tab: ``panel`` is the layout's titled box (passed in, as the compare panel takes it)."""
    slider = dcc.Slider(id=ids.TRAIN_STEP, min=0, max=0, step=None, value=None, marks={}, included=False,
                        updatemode="mouseup", tooltip={"placement": "bottom", "always_visible": False})
    by_step = panel(
        "Training snapshots",
        html.Div([html.Div(id=ids.TRAIN_CAPTION, className="ev-table-caption"),
                  html.Div(slider, className="ev-train-slider"),
                  dcc.Loading(html.Div(id=ids.TRAIN_STEP_BODY, className="ev-row ev-train-gallery"), type="dot",
                              delay_show=150)]),
        hint="input + prompts, ground truth, prediction · one step at a time · follows training at the latest step",
    )
    selectors = html.Div(
        [
            html.Label([html.Span("Datapoint", className="ev-selector-label"),
                        dcc.Dropdown(id=ids.TRAIN_DATAPOINT, clearable=False, className="ev-dropdown")],
                       className="ev-selector"),
            html.Label([html.Span("Steps", className="ev-selector-label"),
                        dcc.Dropdown(id=ids.TRAIN_COMPARE, multi=True, className="ev-dropdown ev-train-steps")],
                       className="ev-selector ev-selector-wide"),
        ],
        className="ev-selectors ev-train-selectors",
    )
    across = panel(
        "Across steps",
        html.Div([selectors, dcc.Loading(html.Div(id=ids.TRAIN_ACROSS_BODY, className="ev-row ev-train-across"),
                                         type="dot", delay_show=150)]),
        hint="the same datapoint at the chosen steps, side by side",
    )
    poll = dcc.Interval(id=ids.TRAIN_POLL, interval=700, disabled=True)
    return html.Div([dcc.Store(id=ids.TRAIN_SELECTION), poll, by_step, across], id=ids.TRAINING_VIEW,
                    className="ev-view", hidden=True)
