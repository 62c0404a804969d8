"""The static part of the overview's health panel: the thresholds, a progress line, the layers × kinds table, and
their stores.

Filled in by :mod:`eval_viewer.app.callbacks.health`; the progress is a plain bar fed by a polling ``dcc.Interval``,
as the comparison summary's. The thresholds are text inputs (not ``type="number"``): a number input hands the app
nothing at all for ``1e`` or ``-`` and clears itself out of its range, so a typo would silently mean "the default";
as text, the app sees what was typed and says why it refuses it. An empty input is the default, shown as its
placeholder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dash import dcc, html

from eval_viewer.app import ids
from eval_viewer.app.health_state import TUNABLE

__all__ = ["health_panel", "threshold_controls"]


def threshold_controls() -> html.Div:
    """One input per :data:`~eval_viewer.app.health_state.TUNABLE` threshold (placeholder: its default), a reset
    button, and the line saying why a value was refused."""
    inputs = [html.Label([html.Span(t.label, className="ev-selector-label"),
                          dcc.Input(id=ids.health_threshold(t.field), type="text",
                                    debounce=True, placeholder=f"{t.default:g}", value="",
                                    className="ev-threshold ev-health-threshold")],
                         className="ev-threshold-box", title=f"{t.hint} (default {t.default:g})")
              for t in TUNABLE]
    reset = html.Button("defaults", id=ids.HEALTH_THRESHOLD_RESET, className="ev-button ev-health-reset",
                        title="back to the documented defaults")
    return html.Div([
        html.Div([html.Span("thresholds", className="ev-health-thresholds-title"), *inputs, reset],
                 className="ev-compare-controls ev-health-thresholds"),
        html.Div(id=ids.HEALTH_THRESHOLD_MESSAGE, className="ev-health-threshold-message", role="alert"),
    ])


def health_panel(panel: Callable[..., Any]) -> html.Div:
    body = html.Div([
        threshold_controls(),
        dcc.Store(id=ids.HEALTH_THRESHOLDS),
        html.Div(id=ids.HEALTH_PROGRESS, className="ev-summary-progress"),
        dcc.Interval(id=ids.HEALTH_POLL, interval=400, disabled=True),
        dcc.Store(id=ids.HEALTH_JOB),
        dcc.Store(id=ids.HEALTH_READY),
        dcc.Loading(html.Div(id=ids.HEALTH_BODY, className="ev-health-body"), type="dot", delay_show=300),
    ])
    return html.Div(panel("Health", body, hint="from the saved debug outputs · layers in forward order × problems · "
                                               "click a count to list those datapoints in the table"),
                    id=ids.HEALTH_BOX, className="ev-health-box")
