"""The static part of the overview's health panel: a progress line, the layers × kinds table, and their stores.

Filled in by :mod:`eval_viewer.app.callbacks.health`; the progress is a plain bar fed by a polling ``dcc.Interval``,
as the comparison summary's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dash import dcc, html

from eval_viewer.app import ids

__all__ = ["health_panel"]


def health_panel(panel: Callable[..., Any]) -> html.Div:
    body = html.Div([
        html.Div(id=ids.HEALTH_PROGRESS, className="ev-summary-progress"),
        dcc.Interval(id=ids.HEALTH_POLL, interval=400, disabled=True),
        dcc.Store(id=ids.HEALTH_JOB),
        dcc.Store(id=ids.HEALTH_READY),
        dcc.Loading(html.Div(id=ids.HEALTH_BODY, className="ev-health-body"), type="dot", delay_show=300),
    ])
    return html.Div(panel("Health", body, hint="from the saved debug outputs · layers in forward order × problems · "
                                               "click a count to list those datapoints in the table"),
                    id=ids.HEALTH_BOX, className="ev-health-box")
