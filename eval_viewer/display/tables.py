"""Small values: stats dicts as tables, 1-D series as line charts / bar charts / histograms, scalars, text.

These are the values that are cheap to send as they are; the work is in showing them honestly: NaN and Inf spelled
out (a JSON payload cannot hold them, so they are counted in captions and left as gaps in charts), long series
decimated by min/max buckets so a spike survives, text escaped by every adapter and truncated past :data:`MAX_TEXT`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from eval_viewer.display.arrays import finite_stats, first_array, is_arraylike, scalar_extras, to_numpy
from eval_viewer.display.figures import caption, figure_view, fmt, new_figure, panel, row
from eval_viewer.display.images import extras_caption
from eval_viewer.display.registry import RenderContext, register
from eval_viewer.display.view import Group, Node, Table, Text
from eval_viewer.display.unknown import summary_card
from eval_viewer.log_format import Kind

__all__ = ["flatten_stats", "format_cell", "stats_table", "decimate", "looks_ordered", "series_figures",
           "render_stats", "render_series", "render_scalar", "render_text", "MAX_TEXT", "MAX_LINE_POINTS"]

MAX_TEXT = 20_000
MAX_ROWS = 500
MAX_LINE_POINTS = 4_000
MAX_BAR_POINTS = 64
HISTOGRAM_FROM = 200
_MAX_LINES = 10


def flatten_stats(value: Mapping[str, Any], prefix: str = "", depth: int = 2) -> list[tuple[str, Any]]:
    """``(dotted key, value)`` rows of a stats dict, nested dicts flattened up to ``depth`` levels."""
    rows: list[tuple[str, Any]] = []
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and depth > 1:
            rows.extend(flatten_stats(item, name + ".", depth - 1))
        else:
            rows.append((name, item))
    return rows


def format_cell(value: Any) -> str:
    """One table cell: numbers via :func:`fmt`; short lists in full; long arrays as length, range and mean."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "…"
    if isinstance(value, Mapping):
        keys = ", ".join(map(str, list(value)[:8]))
        return "{" + keys + (", …" if len(value) > 8 else "") + "}"
    if isinstance(value, (list, tuple)) or is_arraylike(value):
        try:
            array = to_numpy(value)
        except (ValueError, TypeError):
            return f"{type(value).__name__} of {len(value)}" if hasattr(value, "__len__") else type(value).__name__
        if array.ndim == 0:
            return fmt(array.item())
        if array.size <= 8 and array.dtype.kind in "biufUS":
            return "[" + ", ".join(fmt(v) for v in array.reshape(-1).tolist()) + "]"
        if array.dtype.kind in "biuf":
            s = finite_stats(array)
            bad = f", {s['n_nan']} NaN, {s['n_inf']} Inf" if s["n_nan"] or s["n_inf"] else ""
            shape = "×".join(map(str, array.shape))
            return f"{shape}: [{fmt(s['min'])}, {fmt(s['max'])}] mean {fmt(s['mean'])}{bad}"
        return f"{array.dtype} array {'×'.join(map(str, array.shape))}"
    return fmt(value)


def stats_table(value: Mapping[str, Any]) -> Table:
    """A two-column ``ev-table`` of the flattened stats (first :data:`MAX_ROWS` rows)."""
    rows = flatten_stats(value)
    body = [(key, format_cell(item)) for key, item in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        body.append(("…", f"{len(rows) - MAX_ROWS} more"))
    return Table(body, cls="ev-table ev-stats", row_headers=True)


@register(Kind.STATS)
def render_stats(value: Any, ctx: RenderContext) -> Node:
    """A stats dict as a table; anything else that was tagged stats falls back to a summary card."""
    if not isinstance(value, Mapping):
        return summary_card(value)
    return Group([stats_table(value)])


def decimate(y: np.ndarray, max_points: int = MAX_LINE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of at most ``max_points`` points keeping each bucket's min and max, so spikes survive."""
    n = len(y)
    if n <= max_points:
        return np.arange(n), y
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep: list[int] = []
    filled = np.where(np.isfinite(y), y, np.nan)
    for lo, hi in zip(edges[:-1], edges[1:]):
        chunk = filled[lo:hi]
        if not np.isfinite(chunk).any():
            keep.append(int(lo))
            continue
        keep.extend(sorted({int(lo + np.nanargmin(chunk)), int(lo + np.nanargmax(chunk))}))
    idx = np.asarray(keep, dtype=np.int64)
    return idx, y[idx]


def looks_ordered(y: np.ndarray) -> bool:
    """True for series whose order means something (monotone, or smooth: lag-1 autocorrelation above 0.5), for
    which a histogram adds little; False for noisy ones (per-pixel losses, sampled scores)."""
    finite = y[np.isfinite(y)].astype(np.float64)
    if finite.size < 3:
        return True
    d = np.diff(finite)
    if (d >= 0).all() or (d <= 0).all():
        return True
    centred = finite - finite.mean()
    denom = float((centred * centred).sum())
    return denom > 0 and float((centred[:-1] * centred[1:]).sum()) / denom > 0.5


def _as_lines(value: Any) -> np.ndarray:
    array = np.squeeze(to_numpy(value))
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim == 2 and array.shape[1] <= _MAX_LINES < array.shape[0]:
        array = array.T
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[0] > _MAX_LINES or array.dtype.kind not in "biuf":
        raise TypeError(f"not a 1-D numeric series: {array.dtype} {tuple(array.shape)}")
    return array.astype(np.float64)


def series_figures(value: Any, class_names: Any = None) -> list[tuple[str, go.Figure]]:
    """Titled figures for a series: a bar chart for short ones (class scores: class names as labels, the arg-max
    highlighted), else a decimated line chart, plus a histogram when long and not ordered-looking."""
    lines = _as_lines(value)
    n = lines.shape[1]
    clean = np.where(np.isfinite(lines), lines, np.nan).astype(np.float32)
    if lines.shape[0] == 1 and n <= MAX_BAR_POINTS:
        y = clean[0]
        labels = [str(c) for c in class_names] if class_names is not None and len(class_names) == n else None
        colors = ["#1f77b4"] * n
        if np.isfinite(y).any():
            colors[int(np.nanargmax(y))] = "#d62728"
        bars = go.Bar(x=labels or np.arange(n).astype(np.int32), y=y, marker_color=colors,
                      hovertemplate="%{x}: %{y:.4g}<extra></extra>")
        return [("values", new_figure(bars, height=220, xaxis={"type": "category"}))]
    traces = []
    for i, y in enumerate(clean):
        x, yd = decimate(y)
        traces.append(go.Scatter(x=x.astype(np.int32), y=yd, mode="lines" if n > 1 else "markers",
                                 name=f"row {i}", line={"width": 1.2}))
    figures = [("line", new_figure(traces, height=220, showlegend=lines.shape[0] > 1, hovermode="x"))]
    if lines.shape[0] == 1 and n > HISTOGRAM_FROM and not looks_ordered(lines[0]):
        finite = lines[0][np.isfinite(lines[0])]
        if finite.size:
            counts, edges = np.histogram(finite, bins=int(min(50, max(10, np.sqrt(finite.size)))))
            bars = go.Bar(x=((edges[:-1] + edges[1:]) / 2).astype(np.float32), y=counts.astype(np.int32),
                          width=float(edges[1] - edges[0]), marker_color="#2ca02c",
                          hovertemplate="%{x:.4g}: %{y}<extra></extra>")
            figures.append(("histogram", new_figure(bars, height=220)))
    return figures


SHORT_SERIES = 8
"""Integer series up to this long (shapes, channel indices) are written out as numbers, not drawn."""


@register(Kind.SERIES)
def render_series(value: Any, ctx: RenderContext) -> Node:
    """A 1-D series (or up to ten of them, as rows of a 2-D array); other shapes get a summary card."""
    extras: dict[str, Any] = {}
    if isinstance(value, Mapping):
        mapping = value
        key, value = first_array(mapping, ("values", "series", "y", "data"), min_ndim=1)
        extras = scalar_extras(mapping, skip=(key,))
    array = to_numpy(value)
    if array.ndim == 1 and array.size <= SHORT_SERIES and array.dtype.kind in "biu":
        # A shape or a handful of indices: a chart of three bars says less than the numbers themselves. (Short float
        # vectors, class scores say, stay charts.)
        text = "[" + ", ".join(fmt(v) for v in array.tolist()) + "]"
        return Group([Text(text, cls="ev-scalar-value", style="inline"), extras_caption(extras, ctx)],
                     cls="ev-scalar")
    try:
        figures = series_figures(value, ctx.class_names)
    except TypeError:
        return summary_card(value)
    stats = finite_stats(array)
    bad = f"{stats['n_nan']} NaN, {stats['n_inf']} Inf (gaps)" if stats["n_nan"] or stats["n_inf"] else None
    return Group([
        row([panel(title if len(figures) > 1 else None, figure_view(fig)) for title, fig in figures]),
        caption(f"{stats['size']} values", f"[{fmt(stats['min'])}, {fmt(stats['max'])}] mean {fmt(stats['mean'])}",
                bad, extras_caption(extras, ctx)),
    ])


@register(Kind.SCALAR)
def render_scalar(value: Any, ctx: RenderContext) -> Node:
    """One number (NaN and Inf as text); an integer with a class name gets the name beside it."""
    if isinstance(value, (str, bytes)):
        return render_text(value, ctx)
    array = to_numpy(value)
    if array.size != 1:
        return summary_card(value)
    item = array.reshape(()).item()
    name = ctx.class_name(item) if isinstance(item, int) and not isinstance(item, bool) else None
    value_text = Text(fmt(item), cls="ev-scalar-value", style="inline")
    name_text = Text(name, cls="ev-scalar-name", style="inline") if name else None
    return Group([value_text, name_text], cls="ev-scalar")


@register(Kind.TEXT)
def render_text(value: Any, ctx: RenderContext) -> Node:
    """Text, wrapped and escaped (every adapter writes it as text, never as HTML); truncated past :data:`MAX_TEXT`
    characters. A list of strings is shown one per line; anything else that is not text gets a summary card."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        value = "\n".join(value)
    elif is_arraylike(value) and to_numpy(value).dtype.kind in "US" and to_numpy(value).size <= 10_000:
        value = "\n".join(map(str, to_numpy(value).reshape(-1).tolist()))
    if not isinstance(value, str):
        return summary_card(value)
    note = None
    if len(value) > MAX_TEXT:
        note = f"showing the first {MAX_TEXT:,} of {len(value):,} characters"
        value = value[:MAX_TEXT]
    return Group([Text(value, cls="ev-text", style="pre"), caption(note) if note else None])
