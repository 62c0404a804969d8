"""Figure building blocks: one compact look for every renderer, images as PNG traces, and the view nodes renderers
compose (figures, captions, rows, panels).

Every figure gets the same small template (10 px margins, 11 px font, no gridline clutter) instead of Plotly's
default one, which would also add ~8 kB of template JSON to each graph. Images are ``go.Image`` traces whose source is
a PNG data URL, placed in the *original* pixel coordinates (``x0``/``dx``) even when downsampled, so overlays,
markers and click coordinates never need rescaling by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from eval_viewer.display.arrays import block_mean, strided
from eval_viewer.display.colors import colormap_lut
from eval_viewer.display.encode import fit_rgb, png_data_url
from eval_viewer.display.view import FIGURE_HEIGHT, Caption, Child, Figure, Group, Image, Text

__all__ = [
    "IMAGE_MAX_SIDE",
    "FIGURE_HEIGHT",
    "GRAPH_CONFIG",
    "new_figure",
    "hline",
    "image_figure",
    "add_image",
    "add_colorbar",
    "colorbar_ticks",
    "add_hover_layer",
    "figure_view",
    "picture",
    "colorbar_view",
    "legend_view",
    "caption",
    "row",
    "panel",
    "fmt",
    "nonfinite_note",
]

IMAGE_MAX_SIDE = 512
"""Longest side, in pixels, of an image sent to the browser."""
GRAPH_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
}

_TEMPLATE: dict[str, Any] = {
    "layout": {
        "font": {"size": 11, "family": "system-ui, -apple-system, Segoe UI, sans-serif", "color": "#333"},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#fafafa",
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "hoverlabel": {"font": {"size": 11}},
        "xaxis": {"gridcolor": "#e6e6e6", "zeroline": False, "automargin": True},
        "yaxis": {"gridcolor": "#e6e6e6", "zeroline": False, "automargin": True},
        "legend": {"font": {"size": 10}},
        "colorway": ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"],
    }
}
"""The house look, as a plain dict: a ``go.layout.Template`` object is deep-copied on every use."""


def new_figure(data: Any = None, *, height: int = FIGURE_HEIGHT, title: str | None = None, **layout: Any) -> go.Figure:
    """A figure in the house look, its whole layout given at once; a title gets just enough top margin.

    Plotly validates a layout given to the constructor in one pass (about 1 ms), while every later ``update_layout``
    / ``update_xaxes`` re-checks the layout built so far (several ms each); a datapoint view draws dozens of figures,
    so renderers pass everything here (nested dicts, e.g. ``xaxis={"title": {"text": "key"}}``, and lines as
    ``shapes``) rather than updating afterwards.
    """
    if title:
        layout.setdefault("title", {"text": title, "font": {"size": 12}, "x": 0.01, "y": 0.98, "yanchor": "top"})
        layout.setdefault("margin", {"t": 28})
    return go.Figure(data=data, layout={"template": _TEMPLATE, "height": height, "showlegend": False, **layout})


def hline(y: float, **line: Any) -> dict[str, Any]:
    """A horizontal line across the plot at ``y``, as a layout shape for :func:`new_figure`."""
    return {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y, "line": line}


def add_image(fig: go.Figure, rgb: np.ndarray, *, scale: float = 1.0, name: str = "image",
              palette: np.ndarray | None = None, **trace: Any) -> go.Figure:
    """Add an RGB uint8 image (or palette indices with ``palette``) as a PNG ``go.Image``; ``scale`` = original
    pixels per pixel of ``rgb``.

    The trace is centred so pixel ``i`` of the original image sits at coordinate ``i`` (Plotly's own convention for
    an un-scaled image), whatever the downsampling.
    """
    offset = (scale - 1.0) / 2.0
    trace.setdefault("hoverinfo", "x+y")
    fig.add_trace(go.Image(source=png_data_url(rgb, palette), x0=offset, y0=offset, dx=scale, dy=scale, name=name,
                           **trace))
    return fig


def image_figure(rgb: np.ndarray, *, scale: float = 1.0, height: int = FIGURE_HEIGHT, title: str | None = None,
                 max_side: int = IMAGE_MAX_SIDE, palette: np.ndarray | None = None,
                 trace: dict[str, Any] | None = None, **layout: Any) -> go.Figure:
    """A figure showing one RGB uint8 image (or an (H, W) index image with ``palette``) with square pixels and no
    axes.

    ``scale`` says how many original pixels one pixel of ``rgb`` already stands for; the image is further
    downsampled to ``max_side`` here if needed (nearest for index images). ``trace`` adds properties to the image
    trace, ``layout`` to the layout (annotations, say).
    """
    if palette is None:
        small, extra = fit_rgb(rgb, max_side)
    else:
        small = strided(rgb, max_side)
        extra = rgb.shape[1] / small.shape[1]
    fig = new_figure(
        height=height, title=title, plot_bgcolor="rgba(0,0,0,0)", dragmode="pan",
        xaxis={"visible": False, "showgrid": False, "constrain": "domain"},
        yaxis={"visible": False, "showgrid": False, "scaleanchor": "x", "constrain": "domain", "autorange": "reversed"},
        **layout,
    )
    return add_image(fig, small, scale=scale * extra, palette=palette, **(trace or {}))


def colorbar_ticks(lo: float, hi: float, n: int = 5) -> dict[str, Any]:
    """Colour-bar ticks that state the range: ``n`` evenly spaced values from ``lo`` to ``hi``, both ends labelled
    with their value (Plotly's automatic ticks stop short of the ends, so a bar would not say where it starts)."""
    values = np.linspace(lo, hi, n).tolist()
    return {"tickmode": "array", "tickvals": values, "ticktext": [fmt(v) for v in values]}


def add_colorbar(fig: go.Figure, colorscale: str, vmin: float, vmax: float, title: str = "") -> go.Figure:
    """A colour bar for a colour-mapped PNG (``go.Image`` has none): an invisible marker carrying the scale, its
    ticks at both ends of the range (:func:`colorbar_ticks`)."""
    lo = vmin if np.isfinite(vmin) else 0.0
    hi = vmax if np.isfinite(vmax) and vmax > lo else lo + 1.0
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", hoverinfo="skip", showlegend=False,
        marker={"colorscale": colorscale, "cmin": lo, "cmax": hi, "color": [lo], "showscale": True,
                "colorbar": {"thickness": 10, "len": 0.9, "title": {"text": title, "side": "right"},
                             "tickfont": {"size": 10}, "outlinewidth": 0, **colorbar_ticks(lo, hi)}},
    ))
    return fig


def add_hover_layer(fig: go.Figure, values: np.ndarray, label: str = "value", max_side: int = 64,
                    nearest: bool = False, extent: tuple[int, int] | None = None) -> go.Figure:
    """An invisible coarse heatmap over an image so hovering shows the map's value (a PNG carries none).

    At most ``max_side``² cells, block-averaged (or sampled, ``nearest=True``, for class maps), so the payload stays
    a few kilobytes. ``extent`` = (height, width) in figure coordinates that ``values`` covers (default: its shape),
    for a map drawn over an image of another size.
    """
    h, w = extent if extent is not None else values.shape
    coarse = strided(values, max_side) if nearest else block_mean(values, max_side)
    if coarse.dtype.kind in "biu":
        coarse = coarse.astype(np.int32)  # plotly.js typed arrays have no int64
    ch, cw = coarse.shape
    fy, fx = h / ch, w / cw
    number = "%{z}" if nearest else "%{z:.4g}"
    fig.add_trace(go.Heatmap(
        z=coarse, x=(np.arange(cw) + 0.5) * fx - 0.5, y=(np.arange(ch) + 0.5) * fy - 0.5, opacity=0.0,
        showscale=False, hoverongaps=False, colorscale="Greys",
        hovertemplate=f"x %{{x:.0f}}, y %{{y:.0f}}<br>{label} {number}<extra></extra>",
    ))
    return fig


def figure_view(fig: go.Figure, *, graph_id: Any = None, class_name: str = "ev-figure",
                config: dict[str, Any] | None = None) -> Figure:
    """A figure as a view node with the house config; ``graph_id`` (e.g. ``ctx.id_for("attention-image")``) only
    where the app listens to the figure."""
    return Figure(fig, id=graph_id, cls=class_name, config={**GRAPH_CONFIG, **(config or {})})


def fmt(value: Any) -> str:
    """Short human form of a number (4 significant digits; NaN/Inf spelled out), anything else via ``str``."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}".replace(",", " ") if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if np.isnan(v):
            return "NaN"
        if np.isinf(v):
            return "Inf" if v > 0 else "-Inf"
        return f"{v:.4g}"
    return str(value)


def caption(*parts: str | None, class_name: str = "ev-caption") -> Caption:
    """One line of small print under a figure; empty parts are dropped, the rest joined with ' · '."""
    return Caption(" · ".join(p for p in parts if p), cls=class_name)


def row(children: Iterable[Child], class_name: str = "ev-row") -> Group:
    """Figures side by side (the stylesheet makes ``ev-row`` a wrapping flex row)."""
    return Group(tuple(children), cls=class_name)


def panel(title: str | None, children: Sequence[Child] | Child, class_name: str = "ev-panel") -> Group:
    """One titled block of a row (``ev-panel`` / ``ev-panel-title``)."""
    body = tuple(children) if isinstance(children, (list, tuple)) else (children,)
    head = (Text(title, cls="ev-panel-title"),) if title else ()
    return Group(head + body, cls=class_name)


def nonfinite_note(n_nan: int, n_inf: int, marked: bool = True) -> str | None:
    """Caption part for NaN/Inf counts, or None when there are none."""
    if not n_nan and not n_inf:
        return None
    text = f"{n_nan} NaN, {n_inf} Inf"
    return text + (" (magenta)" if marked else "")



def picture(pixels: np.ndarray, *, alt: str = "", palette: np.ndarray | None = None, max_side: int = IMAGE_MAX_SIDE,
            cls: str = "ev-picture") -> Image:
    """A picture that needs no zoom or hover as a plain ``<img>`` (RGB uint8, or palette indices with ``palette``),
    downsampled to ``max_side``: the browser decodes it in a millisecond where a Plotly graph takes tens."""
    small = strided(pixels, max_side) if palette is not None else fit_rgb(pixels, max_side)[0]
    return Image(png_data_url(small, palette), width=int(small.shape[1]), height=int(small.shape[0]), alt=alt, cls=cls)


def colorbar_view(scale_name: str, vmin: float, vmax: float, label: str = "", n_ticks: int = 3) -> Group:
    """A colour bar as HTML: the scale as a thin PNG strip and its range written under it, both ends labelled
    (``label [lo … hi]``), for pictures drawn as plain images."""
    lo = vmin if np.isfinite(vmin) else 0.0
    hi = vmax if np.isfinite(vmax) and vmax > lo else lo + 1.0
    strip = np.repeat(colormap_lut(scale_name)[None], 8, axis=0)
    ticks = [Text(fmt(v), cls="ev-colorbar-tick", style="inline") for v in np.linspace(lo, hi, n_ticks).tolist()]
    return Group([
        Image(png_data_url(strip), alt=f"colour scale {scale_name}", cls="ev-colorbar-strip"),
        Group(ticks, cls="ev-colorbar-ticks"),
        Text(f"{label} [{fmt(lo)}, {fmt(hi)}]".strip(), cls="ev-colorbar-label"),
    ], cls="ev-colorbar", data={"min": fmt(lo), "max": fmt(hi)})


def legend_view(entries: Sequence[tuple[tuple[int, int, int], str]]) -> Group:
    """A legend as HTML: one colour swatch (a tiny PNG) and its text per entry."""
    items = []
    for rgb, text in entries:
        swatch = np.tile(np.asarray(rgb, dtype=np.uint8), (10, 10, 1))
        items.append(Group([Image(png_data_url(swatch), width=10, height=10, alt="", cls="ev-swatch"),
                            Text(text, style="inline")], cls="ev-legend-item", tag="span",
                           data={"color": f"rgb({int(rgb[0])},{int(rgb[1])},{int(rgb[2])})"}))
    return Group(items, cls="ev-legend")
