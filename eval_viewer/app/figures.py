"""The overview's figures: metric over epochs, score distribution and the score map.

These draw scores (whole runs), not saved values of one datapoint, so they live with the app rather than in the
display registry. Each takes plain numbers and returns a ``go.Figure``; arrays are reduced on the server (a histogram,
not 100,000 raw values) so a large run stays quick to draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

__all__ = ["history_figure", "distribution_figure", "score_map_figure", "empty_figure", "SCORE_MAP_MAX_COLS"]

FONT = "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
GOOD_TO_BAD = "RdYlGn"  # low values red; reversed when lower is better
SELECTED = "#1f4fd1"
OTHERS = ("#8a94a6", "#e07b39", "#3aa57a", "#b05cc6", "#c9a227", "#3f8fd2", "#d2515b")
SCORE_MAP_MAX_COLS = 400
OVERVIEW_HEIGHT = 260


def _layout(fig: go.Figure, *, height: int, xtitle: str = "", ytitle: str = "", top: int = 8) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 48, "r": 12, "t": top, "b": 36},
        font={"family": FONT, "size": 12, "color": "#1d2433"},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        hoverlabel={"font": {"family": FONT}},
        xaxis_title=xtitle,
        yaxis_title=ytitle,
    )
    return fig


def empty_figure(message: str, height: int = 220) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"color": "#6b7385"}, x=0.5, y=0.5, xref="paper",
                       yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, height=height)


LEVEL_DASHES = ("dash", "dot", "dashdot", "longdash", "longdashdot")
"""Dash patterns of the evaluator runs' levels, one per run in turn: two runs at the same value (a model and its
quantized copy) interleave their colours instead of one line hiding the other."""


def history_figure(
    histories: Mapping[str, Sequence[tuple[int | None, float]]],
    metric: str,
    *,
    selected_run: str | None = None,
    selected_epoch: int | None = None,
) -> go.Figure:
    """One line per trainer run over its epochs; an evaluator run (no epochs) is a dashed level across the plot.

    Runs are named in a legend beside the plot (an evaluator's with its value), not by labels on the lines: labels
    of runs ending at the same value were drawn on top of each other, and a legend stays readable for many runs
    (it scrolls, and a click hides a run). Trainer runs come first, in ``histories`` order."""
    fig = go.Figure()
    colours = iter(OTHERS * (len(histories) // len(OTHERS) + 1))
    levels: list[tuple[str, float]] = []
    for run, points in histories.items():
        colour = SELECTED if run == selected_run else next(colours)
        width = 3 if run == selected_run else 1.5
        trained = [(e, v) for e, v in points if e is not None]
        if not trained:
            levels.extend((run, v) for e, v in points if e is None and math.isfinite(v))
            continue
        fig.add_trace(
            go.Scatter(
                x=[e for e, _ in trained], y=[v for _, v in trained], name=run, mode="lines+markers",
                line={"color": colour, "width": width}, marker={"size": 5 if run != selected_run else 7},
                hovertemplate=f"{run}<br>epoch %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>",
            )
        )
    epochs = [e for trace in fig.data for e in trace.x]
    span = [min(epochs), max(epochs)] if epochs else [0, 1]
    for k, (run, value) in enumerate(levels):
        colour = SELECTED if run == selected_run else next(colours)
        fig.add_trace(
            go.Scatter(
                x=span, y=[value, value], name=f"{run}  {value:.4g}", mode="lines",
                line={"color": colour, "width": 3 if run == selected_run else 2,
                      "dash": LEVEL_DASHES[k % len(LEVEL_DASHES)]},
                hovertemplate=f"{run} (no epochs)<br>{metric} {value:.4g}<extra></extra>",
            )
        )
    if not len(fig.data):
        return empty_figure(f"No aggregated {metric!r} in any run")
    if selected_epoch is not None and epochs:
        fig.add_vline(x=selected_epoch, line={"color": "#c4cad6", "width": 1})
    fig.update_layout(showlegend=len(fig.data) > 1, legend={"x": 1.02, "y": 1, "xanchor": "left", "yanchor": "top",
                                                            "font": {"size": 11}, "tracegroupgap": 2})
    fig.update_xaxes(dtick=1 if epochs and max(len(t.x) for t in fig.data) <= 12 else None, visible=bool(epochs))
    return _layout(fig, height=OVERVIEW_HEIGHT, xtitle="epoch" if epochs else "", ytitle=metric)


def _bin_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """``bins`` equal bins over [lo, hi] for any finite lo <= hi: edges are mixed as ``lo*(1-t) + hi*t`` (numpy's own
    ``hi - lo`` overflows for scores like ``[1e308, -1e308]``: "Too many bins"); one bin around a single value."""
    if hi > lo:
        t = np.linspace(0.0, 1.0, bins + 1)
        edges = np.unique(lo * (1.0 - t) + hi * t)
        if edges.size >= 2:
            return edges
    pad = max(0.5, abs(lo) * 1e-9)
    return np.array([lo - pad, lo + pad]) if math.isfinite(lo - pad) and math.isfinite(lo + pad) else \
        np.array([np.nextafter(lo, -np.inf), np.nextafter(lo, np.inf)])


def distribution_figure(values: np.ndarray, metric: str, *, aggregated: float | None = None) -> go.Figure:
    """Histogram of the per-datapoint scores (binned here); NaN datapoints are counted in the title, not dropped."""
    finite = values[np.isfinite(values)]
    n_nan = int(values.size - finite.size)
    if finite.size == 0:
        return empty_figure(f"No finite {metric} scores ({n_nan} NaN)")
    bins = int(min(40, max(5, math.sqrt(finite.size))))
    counts, edges = np.histogram(finite, bins=_bin_edges(float(finite.min()), float(finite.max()), bins))
    centres = edges[:-1] / 2 + edges[1:] / 2  # halves first: 1e308 + 1e308 overflows
    fig = go.Figure(
        go.Bar(
            x=centres, y=counts, width=np.diff(edges), marker={"color": "#7f9cf5", "line": {"width": 0}},
            customdata=np.stack([edges[:-1], edges[1:]], axis=1),
            hovertemplate="%{customdata[0]:.4g} – %{customdata[1]:.4g}<br>%{y} datapoints<extra></extra>",
        )
    )
    if aggregated is not None and math.isfinite(aggregated):
        fig.add_vline(x=aggregated, line={"color": "#1d2433", "dash": "dot"}, annotation_text="aggregated",
                      annotation_position="top")
    if n_nan:
        fig.add_annotation(text=f"+ {n_nan} NaN (not binned)", x=0, y=1.0, xref="paper", yref="paper",
                           showarrow=False, xanchor="left", yanchor="bottom", font={"color": "#c0392b"})
    fig.update_layout(bargap=0.05)
    return _layout(fig, height=OVERVIEW_HEIGHT, xtitle=metric, ytitle="datapoints", top=24)


def score_map_figure(values: np.ndarray, metric: str, *, higher_is_better: bool = True) -> go.Figure:
    """Every datapoint as one cell, in index order row by row; red is bad whichever way the metric points.

    The cell's ``customdata`` is the datapoint index, so a click opens it. NaN scores (failures that produced no
    number) are drawn dark and stay clickable; padding after the last datapoint is blank.
    """
    n = int(values.size)
    if n == 0:
        return empty_figure("No datapoints")
    cols = max(1, min(SCORE_MAP_MAX_COLS, math.ceil(math.sqrt(n * 4))))
    rows = math.ceil(n / cols)
    padded = np.full(rows * cols, np.nan)
    padded[:n] = values
    idx = np.arange(rows * cols).reshape(rows, cols)
    grid = padded.reshape(rows, cols)
    real = idx < n
    finite = np.where(real & np.isfinite(grid), grid, np.nan)
    nan_cells = np.where(real & ~np.isfinite(grid), 0.0, np.nan)
    fig = go.Figure()
    fig.add_trace(
        go.Heatmap(
            z=_nulls(finite), customdata=idx, colorscale=GOOD_TO_BAD, reversescale=not higher_is_better,
            hoverongaps=False, xgap=1, ygap=1, colorbar={"thickness": 10, "len": 0.9, "outlinewidth": 0},
            hovertemplate=f"datapoint %{{customdata}}<br>{metric} %{{z:.4g}}<extra></extra>",
        )
    )
    if np.isfinite(nan_cells).any():
        fig.add_trace(
            go.Heatmap(
                z=_nulls(nan_cells), customdata=idx, colorscale=[[0, "#2b2f3a"], [1, "#2b2f3a"]], showscale=False,
                hoverongaps=False, xgap=1, ygap=1,
                hovertemplate=f"datapoint %{{customdata}}<br>{metric} NaN<extra></extra>",
            )
        )
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", constrain="domain")
    _layout(fig, height=OVERVIEW_HEIGHT)
    fig.update_layout(margin={"l": 8, "r": 8, "t": 8, "b": 8})
    return fig


def _nulls(grid: np.ndarray) -> list[list[float | None]]:
    """A 2-D list with ``None`` for NaN: plotly leaves those cells out (JSON has no NaN)."""
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in grid.tolist()]
