"""Difference maps between the same item in two passes: where a picture, a mask or a map changed.

:func:`diff_map` returns a small neutral view (a PNG with a caption) when both values have the same shape and a
difference means something, else None (the paired view then shows the twins alone):

* images: per-pixel mean absolute difference over the RGB channels (0..255), as a heatmap;
* masks (class maps): the pixels whose class changed, in the error colour over a grey copy of the first mask;
* heatmaps, depth, feature maps, layer outputs (any float array): signed ``b - a`` (a diverging scale, symmetric about
  0) for one map, the per-pixel L2 norm of ``b - a`` over channels for a ``(C, H, W)`` stack;
* attention: the head-averaged absolute difference of the attention matrices (queries × keys).

The caption names what is shown and its range, so two passes that are identical say so ("no difference").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eval_viewer.backend.compare import array_of, attention_weights
from eval_viewer.backend.model import Item
from eval_viewer.display import colors
from eval_viewer.display.encode import png_data_url, resize_nearest
from eval_viewer.display.images import image_to_rgb
from eval_viewer.display.masks import mask_to_classes
from eval_viewer.display.view import Caption, Group, Image, Node
from eval_viewer.log_format import Kind

__all__ = ["diff_map", "difference", "DIFF_SIDE"]

DIFF_SIDE = 192
"""Longest side a difference map is drawn at (nearest-neighbour up-sampling keeps cells crisp)."""
_MAP_KINDS = frozenset({Kind.HEATMAP, Kind.DEPTH, Kind.FEATURE_MAP})


def difference(kind: str, a: Any, b: Any) -> tuple[np.ndarray, str, bool] | None:
    """``(map, what it is, signed)`` for two values of ``kind``, or None when they cannot be compared pixel by pixel
    (different shapes, nothing numeric)."""
    if kind == Kind.IMAGE:
        ra, rb = image_to_rgb(a), image_to_rgb(b)
        if ra.shape != rb.shape:
            return None
        return np.abs(ra.astype(np.float32) - rb.astype(np.float32)).mean(-1), "|b − a| per pixel (RGB mean)", False
    if kind == Kind.MASK:
        ca, cb = mask_to_classes(a), mask_to_classes(b)
        if ca.shape != cb.shape:
            return None
        return (ca != cb).astype(np.float32), "pixels whose class changed", False
    if kind == Kind.ATTENTION:
        wa, wb = attention_weights(a), attention_weights(b)
        if wa is None or wb is None or wa.shape != wb.shape:
            return None
        return np.abs(wa.astype(np.float32) - wb.astype(np.float32)).mean(0), "|b − a| of attention (head mean)", False
    if kind in _MAP_KINDS:
        xa, xb = array_of(a), array_of(b)
        if xa is None or xb is None or xa.shape != xb.shape or xa.ndim < 2:
            return None
        d = xb.astype(np.float32) - xa.astype(np.float32)
        while d.ndim > 3 and d.shape[0] == 1:
            d = d[0]
        if d.ndim == 2:
            return d, "b − a", True
        if d.ndim == 3:
            return np.sqrt((d ** 2).sum(0)), "‖b − a‖ over channels", False
    return None


def _picture(values: np.ndarray, kind: str, signed: bool, a: Any) -> tuple[np.ndarray, float]:
    """RGB pixels of a difference map and its largest magnitude."""
    finite = values[np.isfinite(values)]
    top = float(np.abs(finite).max()) if finite.size else 0.0
    if kind == Kind.MASK:
        base = mask_to_classes(a)
        grey = (colors.class_colors(base).astype(np.float32) * 0.35 + 140).astype(np.uint8)
        rgb = np.where(values[..., None] > 0, np.array(colors.ERROR_RGB, dtype=np.uint8), grey)
    elif signed:
        rgb = colors.apply_colormap(values, "RdBu_r", -top or -1.0, top or 1.0)
    else:
        rgb = colors.apply_colormap(values, "Magma", 0.0, top or 1.0)
    h, w = rgb.shape[:2]
    scale = DIFF_SIDE / max(h, w)
    if scale > 1 or max(h, w) > DIFF_SIDE:
        rgb = resize_nearest(rgb, (max(1, round(h * scale)), max(1, round(w * scale))))
    return rgb, top


def diff_map(item_a: Item, item_b: Item) -> Node | None:
    """The difference map of two captures of one item (same kind and shape), or None."""
    if item_a.kind != item_b.kind:
        return None
    try:
        found = difference(item_a.kind, item_a.value, item_b.value)
    except (TypeError, ValueError):
        return None
    if found is None:
        return None
    values, what, signed = found
    rgb, top = _picture(values, item_a.kind, signed, item_a.value)
    if item_a.kind == Kind.MASK:
        note = f"{int(values.sum())} of {values.size} pixels changed class" if top else "no pixel changed class"
    else:
        note = f"max {top:.3g}" if top else "no difference"
    if not top:  # an all-background picture says nothing the caption does not
        return Group([Caption(f"difference: {what} · {note}")], cls="ev-diff")
    return Group([Image(png_data_url(rgb), width=rgb.shape[1], height=rgb.shape[0], alt=f"difference: {what}",
                        cls="ev-diff-image"),
                  Caption(f"difference: {what} · {note}")], cls="ev-diff")
