"""Images, depth maps and heatmaps (GradCAM, saliency): every layout an image arrives in, to one PNG.

:func:`image_to_rgb` is the single place that decides how an array becomes pixels, so the input image, the overlay
base of masks and attention, and the app's thumbnails all agree. Float maps are colour-mapped on the server with the
scale of their kind (:data:`eval_viewer.display.colors.SCALES`), NaN/Inf painted magenta and counted in the caption.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from eval_viewer.display.arrays import block_mean, finite_stats, first_array, scalar_extras, squeeze_leading, to_numpy
from eval_viewer.display.colors import INVALID_RGB, SCALES, apply_colormap, colormap_indices, indexed_palette
from eval_viewer.display.encode import fit_rgb, resize_float
from eval_viewer.display.figures import (
    IMAGE_MAX_SIDE,
    caption,
    colorbar_view,
    fmt,
    nonfinite_note,
    panel,
    picture,
    row,
)
from eval_viewer.display.registry import RenderContext, register, renderer_for
from eval_viewer.display.view import Group, Node, Text
from eval_viewer.log_format import Kind

__all__ = ["image_to_rgb", "context_rgb", "extras_caption", "render_image", "render_depth", "render_heatmap",
           "heatmap_overlay", "flat_note", "map_view"]

_CHANNELS = (1, 3, 4)


def _to_hwc(array: np.ndarray) -> np.ndarray:
    array = squeeze_leading(array, 3)
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image needs 2 or 3 dimensions, got shape {tuple(array.shape)}")
    if array.shape[-1] in _CHANNELS:
        return array
    if array.shape[0] in _CHANNELS:
        return np.moveaxis(array, 0, -1)
    raise ValueError(f"cannot tell the channel axis of shape {tuple(array.shape)} (expected 1, 3 or 4 channels)")


def _to_uint8(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixel values to uint8 and the mask of invalid (NaN/Inf) pixels, or None when all are valid."""
    if array.dtype == np.uint8:
        return array, None
    if array.dtype == bool:
        return array.astype(np.uint8) * 255, None
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8), None
        x = array.astype(np.float32)
        return np.rint((x - low) / max(high - low, 1) * 255).astype(np.uint8), None
    x = np.asarray(array, dtype=np.float32)
    valid = np.isfinite(x)
    invalid = None if valid.all() else np.asarray(~valid.all(axis=-1))
    finite = x[valid]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0  # already a [0, 1] image: keep its brightness
    elif hi <= lo:
        hi = lo + 1.0
    with np.errstate(invalid="ignore"):
        scaled = (np.where(valid, x, lo) - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8), invalid


def image_to_rgb(value: Any) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels from any image layout a log may hold.

    Accepts (H, W), (H, W, 1|3|4), (1|3|4, H, W), with leading axes of length 1 (a batch of one) dropped; numpy
    arrays, torch tensors (converted without importing torch) or nested lists. uint8 is kept; other integers are kept
    if in [0, 255], else rescaled; floats in [0, 1] are scaled by 255, floats in any other range (normalised inputs)
    are rescaled by their finite min/max over all channels (colours preserved); bool is black/white. The alpha
    channel is dropped, grey is replicated; NaN/Inf pixels are painted :data:`INVALID_RGB`.
    """
    array = _to_hwc(to_numpy(value))
    if array.size == 0:
        raise ValueError(f"empty image of shape {tuple(array.shape)}")
    if np.iscomplexobj(array):
        array = np.abs(array)
    pixels, invalid = _to_uint8(array)
    channels = pixels.shape[-1]
    rgb = np.repeat(pixels, 3, axis=-1) if channels == 1 else pixels[..., :3]
    rgb = np.ascontiguousarray(rgb)
    if invalid is not None:
        rgb[invalid] = INVALID_RGB
    return rgb


def context_rgb(ctx: RenderContext) -> np.ndarray | None:
    """The context's input image as RGB uint8, or None when the context has none."""
    if ctx.image is None:
        return None
    return image_to_rgb(ctx.image)


def extras_caption(extras: Mapping[str, Any], ctx: RenderContext) -> str | None:
    """``key value`` pairs of a dict value's scalars; class ids get their names (``target_class 3 (cat)``)."""
    parts = []
    for key, value in extras.items():
        text = fmt(value)
        if "class" in key and isinstance(value, (int, np.integer)) and ctx.class_name(int(value)):
            text += f" ({ctx.class_name(int(value))})"
        parts.append(f"{key} {text}")
    return " · ".join(parts) or None


def _unwrap(value: Any, prefer: tuple[str, ...]) -> tuple[np.ndarray, dict[str, Any]]:
    if isinstance(value, Mapping):
        key, array = first_array(value, prefer, min_ndim=2)
        return array, scalar_extras(value, skip=(key,))
    return to_numpy(value), {}


def _shape_text(array: np.ndarray) -> str:
    return "×".join(str(s) for s in array.shape) + f" {array.dtype}"


@register(Kind.IMAGE)
def render_image(value: Any, ctx: RenderContext) -> Node:
    """An input or output image. A batch shows its first element; a stack of channels that is not an image
    (e.g. 5 bands) is handed to the feature-map renderer."""
    array, extras = _unwrap(value, ("image", "img", "rgb", "pixels", "input"))
    array = squeeze_leading(array, 3)
    note = None
    if array.ndim == 4:
        note = f"first of a batch of {array.shape[0]}"
        array = squeeze_leading(array[0], 3)
    if array.ndim == 3 and array.shape[0] not in _CHANNELS and array.shape[-1] not in _CHANNELS:
        return renderer_for(Kind.FEATURE_MAP)(array, ctx)
    stats = finite_stats(array)
    rgb = image_to_rgb(array)
    return Group([
        picture(rgb, alt="image"),
        caption(_shape_text(array), f"range [{fmt(stats['min'])}, {fmt(stats['max'])}]", note,
                nonfinite_note(int(stats["n_nan"]), int(stats["n_inf"])), extras_caption(extras, ctx)),
    ])


def _scalar_map(value: Any, prefer: tuple[str, ...]) -> tuple[np.ndarray, dict[str, Any], str | None]:
    """A float (H, W) map from a value that may be a dict, have leading axes of 1, or several channels (reduced by
    max of absolute value, the usual saliency reduction)."""
    array, extras = _unwrap(value, prefer)
    array = squeeze_leading(array, 2)
    note = None
    if array.ndim == 3:
        note = f"max |value| over {array.shape[0]} channels"
        array = np.abs(to_numpy(array).astype(np.float32)).max(axis=0)
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {tuple(array.shape)}")
    return array, extras, note


def map_view(values: np.ndarray, scale_name: str, label: str, stats: Mapping[str, float]) -> Group:
    """A float map colour-mapped as a palette PNG (a plain picture) with its colour bar stating the range."""
    small = block_mean(values, IMAGE_MAX_SIDE)
    indices = colormap_indices(small, stats["min"], stats["max"])
    return Group([picture(indices, palette=indexed_palette(scale_name), alt=label),
                  colorbar_view(scale_name, stats["min"], stats["max"], label)], cls="ev-map")


@register(Kind.DEPTH)
def render_depth(value: Any, ctx: RenderContext) -> Node:
    """A depth (or disparity) map in the Turbo scale with a colour bar; invalid pixels magenta."""
    depth, extras, note = _scalar_map(value, ("depth", "pred", "prediction", "disparity"))
    stats = finite_stats(depth)
    flat = flat_note(stats, "depth map")
    if flat is not None:
        return _flat_heatmap(depth, stats, flat, note, extras, RenderContext())
    return Group([
        map_view(depth, SCALES["depth"], "depth", stats),
        caption(_shape_text(depth), f"range [{fmt(stats['min'])}, {fmt(stats['max'])}] mean {fmt(stats['mean'])}",
                note, nonfinite_note(int(stats["n_nan"]), int(stats["n_inf"])), extras_caption(extras, ctx)),
    ])


def heatmap_overlay(image_rgb: np.ndarray, heat: np.ndarray, opacity: float, scale_name: str = SCALES["heatmap"],
                    vmin: float | None = None, vmax: float | None = None, weighted: bool = False) -> np.ndarray:
    """``image_rgb`` blended with the colour-mapped ``heat`` (resized bilinearly to the image) at ``opacity``.

    ``weighted``: the opacity also scales with the value (low values leave the image visible), for peaked maps such
    as one query's attention. NaN/Inf cells of ``heat`` leave the image untouched. Used for GradCAM and attention.
    """
    heat_full = resize_float(heat, image_rgb.shape[:2])
    stats = finite_stats(heat_full) if vmin is None or vmax is None else {"min": vmin, "max": vmax}
    colored = apply_colormap(heat_full, scale_name, stats["min"], stats["max"]).astype(np.float32)
    alpha = np.where(np.isfinite(heat_full), float(np.clip(opacity, 0.0, 1.0)), 0.0)
    if weighted and stats["max"] > stats["min"]:
        with np.errstate(invalid="ignore"):
            alpha = alpha * np.clip((np.nan_to_num(heat_full) - stats["min"]) / (stats["max"] - stats["min"]), 0, 1)
        alpha = np.sqrt(alpha * float(np.clip(opacity, 0.0, 1.0)))  # keep mid values visible
    alpha = alpha[..., None]
    blended = (1.0 - alpha) * image_rgb.astype(np.float32) + alpha * colored
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def flat_note(stats: Mapping[str, float], what: str = "map") -> str | None:
    """Words for a map with nothing to show: zero everywhere, or one value everywhere; None for a map that varies."""
    lo, hi = stats["min"], stats["max"]
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi > lo:
        return None
    if lo == 0.0:
        return f"This {what} is zero everywhere: it highlights nothing."
    return f"This {what} is {fmt(lo)} everywhere: it highlights nothing."


def _flat_heatmap(heat: np.ndarray, stats: Mapping[str, float], note: str, extra: str | None,
                  extras: Mapping[str, Any], ctx: RenderContext) -> Node:
    """A map with nothing to show, said in words and drawn empty: the input image alone, no colours, no colour bar
    (a flat map drawn at one end of a scale reads as "cold everywhere", which it is not)."""
    base = context_rgb(ctx)
    parts: list[Any] = [Text(note, cls="ev-flat-map")]
    if base is not None:
        small, scale = fit_rgb(base, IMAGE_MAX_SIDE)
        parts.append(panel("input (nothing drawn over it)", picture(small, alt="input image")))
    parts.append(caption(_shape_text(heat), f"range [{fmt(stats['min'])}, {fmt(stats['max'])}]", extra,
                         extras_caption(extras, ctx)))
    return Group(parts, cls="ev-flat")


@register(Kind.HEATMAP)
def render_heatmap(value: Any, ctx: RenderContext) -> Node:
    """GradCAM / saliency: over the input image (same aspect, resized) when there is one, and the map alone with a
    colour bar and hover values. Dict values (``{"cam": ..., "target_class": 3}``) show their scalars as a caption.
    A map that is zero (or one value) everywhere says so and is drawn empty."""
    heat, extras, note = _scalar_map(value, ("cam", "heatmap", "saliency", "gradcam", "grad_cam", "attribution", "map"))
    stats = finite_stats(heat)
    flat = flat_note(stats)
    if flat is not None:
        return _flat_heatmap(heat, stats, flat, note, extras, ctx)
    # Colours start at 0 when the map is non-negative (GradCAM is ReLU'd): a map of 0.6..1 everywhere is a flat
    # map, and stretching it over the whole colour scale would invent a contrast the model does not have.
    shown = {**stats, "min": min(0.0, stats["min"])} if np.isfinite(stats["min"]) else dict(stats)
    if not shown["max"] > shown["min"]:
        shown["max"] = shown["min"] + 1.0
    scale_name = SCALES["heatmap"]
    alone = map_view(heat, scale_name, "value", shown)
    base = context_rgb(ctx)
    panels = []
    if base is not None:
        small, _ = fit_rgb(base, IMAGE_MAX_SIDE)
        over = heatmap_overlay(small, block_mean(heat, IMAGE_MAX_SIDE), ctx.mask_opacity, scale_name,
                               shown["min"], shown["max"], weighted=True)
        panels.append(panel("over input", picture(over, alt="heatmap over the input")))
    panels.append(panel("map" if base is not None else None, alone))
    return Group([
        row(panels),
        caption(_shape_text(heat), f"range [{fmt(stats['min'])}, {fmt(stats['max'])}]", note,
                nonfinite_note(int(stats["n_nan"]), int(stats["n_inf"])), extras_caption(extras, ctx)),
    ])
