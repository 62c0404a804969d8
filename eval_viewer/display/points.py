"""Geometry: prompts (points, boxes, mask prompts) drawn over the input image, and point clouds as a 3-D scatter.

Prompts are what a promptable model (SAM and kin) was asked; seeing them on the image next to the predicted mask is
the first check when a prediction is wrong. Point clouds are randomly downsampled (fixed seed: the same points on
every redraw) to :data:`MAX_POINTS` and sent as float32 typed arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go

from eval_viewer.display.arrays import first_array, scalar_extras, squeeze_leading, to_numpy
from eval_viewer.display.colors import PALETTE, SCALES, class_color, rgb_css
from eval_viewer.display.figures import caption, colorbar_ticks, figure_view, image_figure, new_figure
from eval_viewer.display.images import context_rgb, extras_caption
from eval_viewer.display.masks import mask_to_classes, overlay_mask
from eval_viewer.display.registry import RenderContext, register
from eval_viewer.display.view import Group, Node
from eval_viewer.log_format import Kind

__all__ = ["Prompts", "parse_prompts", "prompts_figure", "render_prompts", "point_cloud_figure",
           "render_point_cloud", "MAX_POINTS"]

MAX_POINTS = 20_000
_POINT_KEYS = ("points", "point_coords", "coords", "clicks", "point")
_LABEL_KEYS = ("labels", "point_labels", "label")
_BOX_KEYS = ("boxes", "box", "bboxes", "bbox")
_MASK_KEYS = ("mask", "mask_input", "masks", "mask_prompt")
_LABEL_STYLE: dict[int, tuple[str, str, str]] = {
    1: ("positive", "#2ecc40", "star"),
    0: ("negative", "#ff4136", "x"),
    2: ("box corner", "#0074d9", "triangle-up"),
    3: ("box corner", "#0074d9", "triangle-down"),
}


@dataclass(frozen=True)
class Prompts:
    """Prompts in image pixel coordinates: ``points`` (N, 2) as [x, y], ``labels`` (N,), ``boxes`` (M, 4) as
    [x0, y0, x1, y1], an optional mask prompt, and the dict's other scalars."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    mask: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _get(value: Mapping[str, Any], keys: tuple[str, ...]) -> np.ndarray | None:
    for key in keys:
        if key in value and value[key] is not None:
            return to_numpy(value[key])
    return None


def parse_prompts(value: Any) -> Prompts:
    """Prompts from a dict (``points``/``point_coords``, ``labels``/``point_labels``, ``boxes``/``box``,
    ``mask``/``mask_input``) or a bare array: last axis 2 = points, 3 = points with a label column, 4 = boxes.
    Batch axes are flattened."""
    if isinstance(value, Mapping):
        points, labels = _get(value, _POINT_KEYS), _get(value, _LABEL_KEYS)
        boxes, mask = _get(value, _BOX_KEYS), _get(value, _MASK_KEYS)
        used = set(_POINT_KEYS + _LABEL_KEYS + _BOX_KEYS + _MASK_KEYS)
        extras = scalar_extras({k: v for k, v in value.items() if k not in used})
    else:
        array = to_numpy(value)
        points = labels = boxes = mask = None
        extras = {}
        if array.ndim >= 1 and array.shape[-1] == 4:
            boxes = array
        elif array.ndim >= 1 and array.shape[-1] == 3:
            flat = array.reshape(-1, 3)
            points, labels = flat[:, :2], flat[:, 2]
        elif array.ndim >= 1 and array.shape[-1] == 2:
            points = array
        else:
            raise ValueError(f"prompts need a last axis of 2 (points), 3 (points + label) or 4 (boxes), "
                             f"got shape {tuple(array.shape)}")
    points = None if points is None or points.size == 0 else points.reshape(-1, 2).astype(np.float64)
    boxes = None if boxes is None or boxes.size == 0 else boxes.reshape(-1, 4).astype(np.float64)
    if labels is not None:
        labels = labels.reshape(-1)
        if points is None or labels.size != len(points):
            labels = None
    if mask is not None:
        mask = squeeze_leading(mask, 2)
        mask = mask_to_classes(mask) if mask.ndim >= 2 else None
    return Prompts(points, labels, boxes, mask, extras)


def _scale_normalised(prompts: Prompts, shape: tuple[int, int]) -> tuple[Prompts, bool]:
    """Coordinates all within [0, 1] on an image bigger than a few pixels are normalised: scale them to pixels."""
    arrays = [a for a in (prompts.points, prompts.boxes) if a is not None]
    finite = [a[np.isfinite(a)] for a in arrays]
    if not finite or not any(f.size for f in finite) or max(shape) <= 4:
        return prompts, False
    if any((f < 0).any() or (f > 1.0).any() for f in finite):
        return prompts, False
    h, w = shape
    points = prompts.points * [w, h] if prompts.points is not None else None
    boxes = prompts.boxes * [w, h, w, h] if prompts.boxes is not None else None
    return Prompts(points, prompts.labels, boxes, prompts.mask, prompts.extras), True


def prompts_figure(prompts: Prompts, image_rgb: np.ndarray | None, opacity: float = 0.5) -> go.Figure:
    """Points (one trace per label: positive green stars, negative red crosses, SAM box corners blue, padding -1
    left out), boxes as closed outlines, a mask prompt as an overlay; over ``image_rgb`` or a blank canvas."""
    if image_rgb is not None:
        base = image_rgb if prompts.mask is None else overlay_mask(image_rgb, prompts.mask, opacity)
    else:
        coords = [a[np.isfinite(a).all(axis=1)] for a in (prompts.points, prompts.boxes) if a is not None]
        coords = [c.reshape(-1, 2) for c in coords if c.size]
        extent = np.concatenate(coords).max(axis=0) if coords else np.array([1.0, 1.0])
        w, h = int(np.clip(extent[0] * 1.1 + 1, 8, 4096)), int(np.clip(extent[1] * 1.1 + 1, 8, 4096))
        base = np.full((h, w, 3), 245, dtype=np.uint8)
        if prompts.mask is not None:
            base = overlay_mask(base, prompts.mask, opacity)
    fig = image_figure(base)
    if prompts.boxes is not None:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for x0, y0, x1, y1 in prompts.boxes:
            xs += [x0, x1, x1, x0, x0, None]
            ys += [y0, y0, y1, y1, y0, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="box", line={"color": "#0074d9", "width": 2},
                                 hoverinfo="x+y"))
    if prompts.points is not None:
        labels = prompts.labels if prompts.labels is not None else np.ones(len(prompts.points), dtype=np.int64)
        for label in np.unique(labels):
            label_int = int(label)
            if label_int == -1:  # SAM's padding point
                continue
            name, color, symbol = _LABEL_STYLE.get(label_int, (f"label {label_int}",
                                                              rgb_css(class_color(label_int, PALETTE)), "circle"))
            pts = prompts.points[labels == label]
            fig.add_trace(go.Scatter(
                x=pts[:, 0], y=pts[:, 1], mode="markers", name=name,
                marker={"color": color, "symbol": symbol, "size": 13, "line": {"color": "white", "width": 1.5}},
                hovertemplate=f"{name}<br>x %{{x:.1f}}, y %{{y:.1f}}<extra></extra>",
            ))
    return fig


@register(Kind.PROMPTS)
def render_prompts(value: Any, ctx: RenderContext) -> Node:
    """Prompts over the input image (or a blank canvas), with counts in the caption."""
    prompts = parse_prompts(value)
    image = context_rgb(ctx)
    scaled = False
    if image is not None:
        prompts, scaled = _scale_normalised(prompts, image.shape[:2])
    fig = prompts_figure(prompts, image, ctx.mask_opacity)
    n_points = 0 if prompts.points is None else len(prompts.points)
    n_pad = 0 if prompts.labels is None else int(np.count_nonzero(prompts.labels == -1))
    n_pos = None if prompts.labels is None else int(np.count_nonzero(prompts.labels == 1))
    return Group([
        figure_view(fig),
        caption(f"{n_points - n_pad} points" + (f" ({n_pos} positive)" if n_pos is not None else ""),
                f"{n_pad} padding" if n_pad else None,
                f"{0 if prompts.boxes is None else len(prompts.boxes)} boxes",
                "mask prompt" if prompts.mask is not None else None,
                "normalised coordinates scaled to the image" if scaled else None,
                extras_caption(prompts.extras, ctx)),
    ])


def _point_array(value: Any) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    colors = None
    extras: dict[str, Any] = {}
    if isinstance(value, Mapping):
        key, array = first_array(value, ("points", "xyz", "point_cloud", "pointcloud", "pc", "coords"), min_ndim=2)
        colors = _get(value, ("colors", "colours", "rgb", "color"))
        extras = scalar_extras(value, skip=(key,))
    else:
        array = to_numpy(value)
    array = squeeze_leading(array, 2)
    if array.ndim == 2 and array.shape[1] > 8 and array.shape[0] in (3, 4, 6):
        array = array.T  # channels-first (3, N)
    if array.ndim != 2 or array.shape[1] < 3:
        raise ValueError(f"a point cloud needs shape (N, 3+), got {tuple(array.shape)}")
    if colors is not None:
        colors = squeeze_leading(colors, 2).reshape(-1, colors.shape[-1])
        if len(colors) != len(array) or colors.shape[1] < 3:
            colors = None
    return array, colors, extras


def _hex_colors(rgb: np.ndarray) -> list[str]:
    x = np.nan_to_num(rgb[:, :3].astype(np.float64))
    if x.max(initial=0.0) <= 1.0:
        x = x * 255.0
    x = np.clip(np.rint(x), 0, 255).astype(np.int64)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in x]


def point_cloud_figure(points: np.ndarray, colors: np.ndarray | None = None, max_points: int = MAX_POINTS,
                       height: int = 380) -> tuple[go.Figure, dict[str, int]]:
    """A 3-D scatter of ``points`` (N, 3+): coloured by ``colors`` (N, 3) RGB, else columns 3:6 when they look like
    RGB, else column 3 (intensity / label), else z. Non-finite points are dropped and counted; more than
    ``max_points`` are randomly subsampled. Returns the figure and ``{"total", "shown", "dropped"}``."""
    array = np.asarray(points)
    finite = np.isfinite(array[:, :3].astype(np.float64)).all(axis=1)
    keep = np.flatnonzero(finite)
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(keep, size=max_points, replace=False))
    xyz = array[keep, :3].astype(np.float32)
    if colors is None and array.shape[1] >= 6:
        rgb = array[keep, 3:6].astype(np.float64)
        if np.isfinite(rgb).all() and rgb.min(initial=0) >= 0 and rgb.max(initial=0) <= 255:
            colors = array[:, 3:6]
    marker: dict[str, Any] = {"size": 1.6, "opacity": 0.9}
    if colors is not None:
        marker["color"] = _hex_colors(np.asarray(colors)[keep])
    else:
        column = array[keep, 3] if array.shape[1] >= 4 else xyz[:, 2]
        shade = np.nan_to_num(column.astype(np.float32))
        lo, hi = (float(shade.min()), float(shade.max())) if shade.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        marker.update(color=shade, colorscale=SCALES["feature"], showscale=True, cmin=lo, cmax=hi,
                      colorbar={"thickness": 10, "len": 0.8, "title": {"text": "c3" if array.shape[1] >= 4 else "z"},
                                **colorbar_ticks(lo, hi)})
    axis = {"title": {"text": ""}, "showbackground": False, "tickfont": {"size": 9}}
    fig = new_figure(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", marker=marker,
                                  hovertemplate="x %{x:.3g}<br>y %{y:.3g}<br>z %{z:.3g}<extra></extra>"),
                     height=height, scene={"aspectmode": "data", "xaxis": axis, "yaxis": axis, "zaxis": axis})
    return fig, {"total": int(len(array)), "shown": int(len(keep)), "dropped": int(np.count_nonzero(~finite))}


@register(Kind.POINT_CLOUD)
def render_point_cloud(value: Any, ctx: RenderContext) -> Node:
    """A point cloud (N, 3+) as a rotatable 3-D scatter, downsampled to :data:`MAX_POINTS`."""
    points, colors, extras = _point_array(value)
    fig, counts = point_cloud_figure(points, colors)
    shown = f"{counts['shown']:,} of {counts['total']:,} points" if counts["shown"] < counts["total"] else \
        f"{counts['total']:,} points"
    return Group([
        figure_view(fig, config={"scrollZoom": True}),
        caption(shown, f"{points.shape[1]} columns",
                f"{counts['dropped']} non-finite dropped" if counts["dropped"] else None,
                extras_caption(extras, ctx)),
    ])

