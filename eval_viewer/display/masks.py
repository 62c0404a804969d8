"""Segmentation masks: a fixed class palette, overlays on the input image, legends with class names and areas.

Masks are class maps; they are resized nearest-neighbour only (never interpolated: no class that is not in the map
appears at a boundary). Class 0 is background and transparent in overlays; every class region is outlined in black or
white, whichever stands out more, so a class stays visible on an image of its own colour. A stack of binary masks
(SAM's multimask output, instance masks) is drawn as one small panel per mask rather than squashed into one map.
Per-class scores (logits or probabilities, :data:`Kind.LOGITS`) are drawn as their arg-max class map beside the
confidence of each pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from eval_viewer.display.arrays import block_mean, first_array, scalar_extras, squeeze_leading, strided, to_numpy
from eval_viewer.display.colors import PALETTE, SCALES, class_color, class_colors, colormap_indices, indexed_palette, rgb_css
from eval_viewer.display.encode import fit_rgb, png_data_url, resize_nearest
from eval_viewer.display.figures import (
    FIGURE_HEIGHT,
    IMAGE_MAX_SIDE,
    add_hover_layer,
    colorbar_view,
    legend_view,
    picture,
    caption,
    fmt,
    image_figure,
    panel,
    row,
)
from eval_viewer.display.images import context_rgb, extras_caption, image_to_rgb
from eval_viewer.display.registry import RenderContext, register
from eval_viewer.display.view import Group, Image, Node
from eval_viewer.log_format import Kind

__all__ = ["overlay_mask", "mask_to_classes", "mask_figure", "mask_picture", "mask_legend", "render_mask",
           "render_logits", "class_probabilities", "outline", "MASK_KEYS"]

Palette = Sequence[tuple[int, int, int]]
MASK_KEYS = ("mask", "masks", "segmentation", "seg", "pred", "prediction", "label", "logits")
_MAX_LEGEND = 20
_MAX_STACK = 8
_STACK_SIDE = 256


def outline(classes: np.ndarray) -> np.ndarray:
    """Pixels of a foreground class region whose right or lower neighbour holds another class (a 1-px boundary)."""
    edge = np.zeros(classes.shape, dtype=bool)
    right = classes[:, 1:] != classes[:, :-1]
    down = classes[1:, :] != classes[:-1, :]
    edge[:, :-1] |= right
    edge[:, 1:] |= right
    edge[:-1, :] |= down
    edge[1:, :] |= down
    return edge & (classes != 0)


def overlay_mask(image_rgb: np.ndarray, mask: np.ndarray, opacity: float = 0.5,
                 palette: Palette = PALETTE, outlined: bool = True) -> np.ndarray:
    """``image_rgb`` (H, W, 3 uint8) with every non-zero class of ``mask`` blended in its palette colour at
    ``opacity``; class 0 leaves the image untouched. A mask of another size is resized (nearest) to the image.

    ``outlined``: the boundary of each class region is drawn in black or white (whichever differs more from the
    blended colour there), so a class whose colour matches the image under it is still seen."""
    image = np.asarray(image_rgb, dtype=np.uint8)
    classes = np.asarray(mask)
    if classes.shape != image.shape[:2]:
        classes = resize_nearest(classes, image.shape[:2])
    alpha = float(np.clip(opacity, 0.0, 1.0))
    out = image.copy()
    fg = classes != 0
    if fg.any():
        colors = class_colors(classes[fg], tuple(palette)).astype(np.float32)
        blended = (1.0 - alpha) * image[fg].astype(np.float32) + alpha * colors
        out[fg] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        if outlined and min(classes.shape) >= 8:
            edge = outline(classes)
            luma = out.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            for cls in np.unique(classes[edge]):  # one outline colour per class: steady on a noisy image
                region = classes == cls
                out[edge & region] = 0 if float(luma[region].mean()) > 128 else 255
    return out


def mask_to_classes(value: Any) -> np.ndarray:
    """An (H, W) int64 class map from the forms a mask arrives in.

    (H, W) integers as they are; bool as 0/1; float maps holding whole numbers as classes, other float (H, W) maps
    (probabilities) thresholded at 0.5; (C, H, W) float logits/probabilities by argmax over C (NaN never wins);
    (C, H, W) one-hot integers by argmax; (H, W, 1) and leading axes of 1 squeezed.
    """
    array = squeeze_leading(to_numpy(value), 2)
    if array.ndim == 3 and array.shape[-1] == 1 and min(array.shape[:2]) > 1:
        array = array[..., 0]  # (H, W, 1); a (C, H, 1) stack of logits stays one
    if array.ndim == 3:
        scores = np.nan_to_num(array.astype(np.float32), nan=-np.inf)
        return np.argmax(scores, axis=0).astype(np.int64)
    if array.ndim != 2:
        raise ValueError(f"a mask needs shape (H, W) or (C, H, W), got {tuple(array.shape)}")
    if array.dtype == bool:
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        whole = np.all(np.equal(np.mod(array[finite], 1), 0)) if finite.any() else True
        if whole:
            return np.where(finite, array, 0).astype(np.int64)
        return (np.nan_to_num(array, nan=0.0) > 0.5).astype(np.int64)
    return array.astype(np.int64)


def _legend(fig: go.Figure, classes: np.ndarray, class_names: Sequence[str] | None, palette: Palette,
            with_background: bool) -> None:
    values, counts = np.unique(classes, return_counts=True)
    order = np.argsort(-counts)
    total = classes.size
    shown = 0
    for i in order:
        cls = int(values[i])
        if cls == 0 and not with_background:
            continue
        if shown >= _MAX_LEGEND:
            break
        name = class_names[cls] if class_names is not None and 0 <= cls < len(class_names) else None
        label = f"{cls} {name}" if name else str(cls)
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=f"{label} · {100 * counts[i] / total:.1f}%",
            marker={"symbol": "square", "size": 10, "color": rgb_css(class_color(cls, tuple(palette)))},
            hoverinfo="skip", showlegend=True,
        ))
        shown += 1
    fig.update_layout(showlegend=shown > 0,
                      legend={"orientation": "h", "x": 0, "y": -0.01, "yanchor": "top", "itemclick": False,
                              "itemdoubleclick": False})


def mask_figure(mask: Any, image: Any | None = None, *, opacity: float = 0.5,
                class_names: Sequence[str] | None = None, palette: Palette = PALETTE,
                height: int = FIGURE_HEIGHT, title: str | None = None, max_side: int = IMAGE_MAX_SIDE) -> go.Figure:
    """A mask as a figure: over ``image`` (any layout :func:`image_to_rgb` takes; the mask is resized to it) or
    alone in palette colours, with a legend of the classes present (name and area) and class ids on hover.

    Figure coordinates are the image's pixels (the mask's when there is no image).
    """
    classes = mask_to_classes(mask)
    if image is not None:
        full = image_to_rgb(image)
        base, scale = fit_rgb(full, max_side)
        rgb = overlay_mask(base, resize_nearest(classes, base.shape[:2]), opacity, palette)
        extent = full.shape[:2]
    else:
        small = strided(classes, max_side)
        rgb, scale, extent = class_colors(small, tuple(palette)), classes.shape[1] / small.shape[1], classes.shape
    fig = image_figure(rgb, scale=scale, height=height, title=title, max_side=max_side)
    add_hover_layer(fig, classes, "class", nearest=True, extent=extent)
    _legend(fig, classes, class_names, palette, with_background=image is None)
    return fig


def mask_picture(classes: np.ndarray, image: Any | None = None, *, opacity: float = 0.5,
                 palette: Palette = PALETTE, max_side: int = IMAGE_MAX_SIDE, alt: str = "mask") -> Image:
    """A class map as a plain picture: over ``image`` (outlined, :func:`overlay_mask`) or alone in palette colours."""
    if image is not None:
        base, _ = fit_rgb(image_to_rgb(image), max_side)
        rgb = overlay_mask(base, resize_nearest(classes, base.shape[:2]), opacity, palette)
    else:
        rgb = class_colors(strided(classes, max_side), tuple(palette))
    return picture(rgb, alt=alt, max_side=max_side)


def mask_legend(classes: np.ndarray | Sequence[np.ndarray], class_names: Sequence[str] | None = None,
                palette: Palette = PALETTE, with_background: bool = False) -> Group:
    """The classes present (in any of ``classes``), largest first: colour, id, name when known, and area."""
    maps = [classes] if isinstance(classes, np.ndarray) else list(classes)
    total = sum(m.size for m in maps)
    counts: dict[int, int] = {}
    for m in maps:
        values, n = np.unique(m, return_counts=True)
        for value, count in zip(values.tolist(), n.tolist()):
            counts[int(value)] = counts.get(int(value), 0) + int(count)
    entries = []
    for cls, count in sorted(counts.items(), key=lambda kv: -kv[1])[:_MAX_LEGEND]:
        if cls == 0 and not with_background:
            continue
        name = class_names[cls] if class_names is not None and 0 <= cls < len(class_names) else None
        entries.append((class_color(cls, tuple(palette)),
                        (f"{cls} {name}" if name else str(cls)) + f" · {100 * count / max(total, 1):.1f}%"))
    return legend_view(entries)


def _class_list(classes: np.ndarray, ctx: RenderContext) -> str:
    present = [int(c) for c in np.unique(classes) if c != 0]
    names = [f"{c} {ctx.class_name(c)}" if ctx.class_name(c) else str(c) for c in present[:12]]
    more = f" +{len(present) - 12} more" if len(present) > 12 else ""
    return f"{len(present)} foreground classes" + (f": {', '.join(names)}{more}" if present else "")


def _is_binary_stack(array: np.ndarray) -> bool:
    if array.ndim != 3 or array.shape[0] < 2 or array.shape[0] > 64:
        return False
    if array.dtype == bool:
        return True
    if array.dtype.kind in "iu":
        return bool(np.isin(strided(array, 64), (0, 1)).all())
    return False


def _stack_picture(mask: np.ndarray, color_class: int, base: np.ndarray | None, opacity: float) -> Image:
    """One binary mask of a stack as a plain PNG picture: over the (downsampled) input image, or alone."""
    classes = mask.astype(np.int64) * color_class
    if base is not None:
        small, _ = fit_rgb(base, _STACK_SIDE)
        rgb = overlay_mask(small, resize_nearest(classes, small.shape[:2]), opacity)
    else:
        rgb = class_colors(strided(classes, _STACK_SIDE))
    return Image(png_data_url(rgb), alt=f"mask {color_class - 1}")


def _render_stack(stack: np.ndarray, scores: np.ndarray | None, ctx: RenderContext) -> Node:
    """Small multiples, one per mask. Plain images, not figures: a binary mask has nothing to hover over (its panel
    title says which mask it is, its score and its area), and up to eight Plotly graphs would cost the browser far
    more drawing time than eight PNGs."""
    base = context_rgb(ctx)
    panels = []
    for i in range(min(len(stack), _MAX_STACK)):
        picture = _stack_picture(stack[i], i + 1, base, ctx.mask_opacity)
        score = f" · score {fmt(float(scores[i]))}" if scores is not None and i < scores.size else ""
        area = 100.0 * float(np.count_nonzero(stack[i])) / stack[i].size
        panels.append(panel(f"mask {i}{score} · {area:.1f}%", picture))
    more = f"first {_MAX_STACK} of {len(stack)} masks" if len(stack) > _MAX_STACK else f"{len(stack)} masks"
    return Group([row(panels, "ev-row ev-grid"), caption(more, "×".join(map(str, stack.shape[1:])))])


@register(Kind.MASK)
def render_mask(value: Any, ctx: RenderContext) -> Node:
    """A class map, over the input image when the context has one (at ``ctx.mask_opacity``), with a legend.
    A stack of binary masks (N, H, W) shows one panel per mask, with its score when a dict value carries
    ``scores`` / ``iou_predictions``."""
    extras: dict[str, Any] = {}
    scores = None
    if isinstance(value, Mapping):
        key, array = first_array(value, MASK_KEYS, min_ndim=2)
        extras = scalar_extras(value, skip=(key,))
        for name in ("scores", "iou_predictions", "iou_scores", "score"):
            if name in value and value[name] is not None:
                scores = to_numpy(value[name]).astype(np.float64).ravel()
                break
    else:
        array = to_numpy(value)
    array = squeeze_leading(array, 3)
    if _is_binary_stack(array):
        return _render_stack(array, scores, ctx)
    classes = mask_to_classes(array)
    palette = ctx.palette or PALETTE
    image = context_rgb(ctx)
    return Group([
        mask_picture(classes, image, opacity=ctx.mask_opacity, palette=palette),
        mask_legend(classes, ctx.class_names, palette, with_background=image is None),
        caption("×".join(map(str, classes.shape)), _class_list(classes, ctx), extras_caption(extras, ctx)),
    ])


def class_probabilities(scores: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(C, H, W)`` per-class scores as probabilities, and whether they were logits (a softmax over C was applied).

    Scores already in [0, 1] that sum to 1 over C are kept; anything else is soft-maxed (NaN counts as -inf)."""
    x = np.asarray(scores, dtype=np.float32)
    finite = np.isfinite(x)
    if finite.all() and x.min() >= 0.0 and x.max() <= 1.0 and np.allclose(x.sum(axis=0), 1.0, atol=1e-3):
        return x, False
    x = np.where(finite, x, -np.inf)
    top = np.max(x, axis=0, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(x - top)
    total = e.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, e / total, 1.0 / x.shape[0]).astype(np.float32), True


@register(Kind.LOGITS)
def render_logits(value: Any, ctx: RenderContext) -> Node:
    """Per-class scores: the arg-max class map (over the input image, with a legend) beside the confidence of each
    pixel (its top probability, on a fixed [1/C, 1] scale: 1/C is as unsure as C classes allow)."""
    extras: dict[str, Any] = {}
    if isinstance(value, Mapping):
        key, array = first_array(value, ("logits", "probs", "probabilities", "scores", "pred", "prediction",
                                         "output"), min_ndim=3)
        extras = scalar_extras(value, skip=(key,))
    else:
        array = to_numpy(value)
    array = squeeze_leading(array, 3)
    note = None
    if array.ndim == 4:
        note = f"first of a batch of {array.shape[0]}"
        array = array[0]
    if array.ndim != 3 or array.shape[0] < 2:
        raise ValueError(f"per-class scores need shape (C, H, W) with C >= 2, got {tuple(array.shape)}")
    probs, were_logits = class_probabilities(array)
    classes = np.argmax(probs, axis=0).astype(np.int64)
    confidence = probs.max(axis=0)
    n = array.shape[0]
    palette = ctx.palette or PALETTE
    image = context_rgb(ctx)
    low = 1.0 / n
    small = block_mean(confidence, IMAGE_MAX_SIDE)
    confidence_view = Group([picture(colormap_indices(small, low, 1.0), palette=indexed_palette(SCALES["confidence"]),
                                     alt="confidence"),
                             colorbar_view(SCALES["confidence"], low, 1.0, "confidence")], cls="ev-map")
    class_view = Group([mask_picture(classes, image, opacity=ctx.mask_opacity, palette=palette, alt="arg-max class"),
                        mask_legend(classes, ctx.class_names, palette, with_background=image is None)])
    unsure = 100.0 * float(np.mean(confidence < 0.5))
    return Group([
        row([panel("arg-max class", class_view), panel("confidence", confidence_view)]),
        caption(f"{n} classes × " + "×".join(map(str, classes.shape)),
                "softmax of logits" if were_logits else "probabilities",
                f"confidence mean {fmt(float(confidence.mean()))}, {unsure:.1f}% of pixels below 0.5",
                _class_list(classes, ctx), note, extras_caption(extras, ctx)),
    ])
