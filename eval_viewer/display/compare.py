"""Predictions beside labels: masks as overlays on the input image plus an error map, class ids side by side.

The app gets a datapoint's ``labels`` and ``predictions`` items; :func:`pair_items` matches them (same key, else the
only item of the same kind on each side) and :func:`render_comparison` draws a pair. Like :func:`render_item` it never
raises: a pair that cannot be compared specially is shown as two panels rendered through the registry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from eval_viewer.backend.model import Item
from eval_viewer.display import colors
from eval_viewer.display.arrays import to_numpy
from eval_viewer.display.encode import fit_rgb, resize_nearest
from eval_viewer.display.figures import IMAGE_MAX_SIDE, caption, fmt, panel, picture, row
from eval_viewer.display.images import context_rgb
from eval_viewer.display.masks import mask_legend, mask_picture, mask_to_classes
from eval_viewer.display.registry import RenderContext, render_item
from eval_viewer.display.view import Badge, Group, Node, Text
from eval_viewer.log_format import Kind

__all__ = ["pair_items", "render_comparison", "mask_comparison", "mask_agreement", "ERROR_RGB"]

logger = logging.getLogger(__name__)

ERROR_RGB = colors.ERROR_RGB
"""Colour of pixels where the prediction differs from the label."""


def _family(kind: str) -> str:
    """Kinds that compare with each other: a class map and per-class scores (its arg-max) are both class maps."""
    return Kind.MASK if kind == Kind.LOGITS else kind


def pair_items(labels: Sequence[Item], predictions: Sequence[Item]) -> list[tuple[Item | None, Item | None]]:
    """(label, prediction) pairs: same key first; then, among the rest, the only label and the only prediction of a
    kind; everything left unpaired alone, labels first. Order follows the labels, then the predictions."""
    by_key = {p.key: p for p in predictions}
    pairs: list[tuple[Item | None, Item | None]] = []
    used: set[int] = set()
    rest: list[Item] = []
    for label in labels:
        match = by_key.get(label.key)
        if match is not None and id(match) not in used:
            pairs.append((label, match))
            used.add(id(match))
        else:
            rest.append(label)
    left = [p for p in predictions if id(p) not in used]
    for label in rest:
        same_kind = [p for p in left if _family(p.kind) == _family(label.kind)]
        if len(same_kind) == 1 and sum(1 for r in rest if _family(r.kind) == _family(label.kind)) == 1:
            pairs.append((label, same_kind[0]))
            left.remove(same_kind[0])
        else:
            pairs.append((label, None))
    pairs.extend((None, p) for p in left)
    return pairs


def mask_agreement(label: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Pixel accuracy and mean IoU over the classes present in either map (class maps of equal shape)."""
    accuracy = float(np.mean(label == prediction)) if label.size else float("nan")
    ious = []
    for cls in np.union1d(np.unique(label), np.unique(prediction)):
        a, b = label == cls, prediction == cls
        union = np.count_nonzero(a | b)
        if union:
            ious.append(np.count_nonzero(a & b) / union)
    return {"pixel_accuracy": accuracy, "mean_iou": float(np.mean(ious)) if ious else float("nan")}


def mask_comparison(label: Any, prediction: Any, ctx: RenderContext) -> Node:
    """Label and prediction overlaid on the input image (or alone), and the pixels where they differ in red over a
    dimmed grey copy of the image."""
    truth = mask_to_classes(label)
    pred = mask_to_classes(prediction)
    if pred.shape != truth.shape:
        pred = resize_nearest(pred, truth.shape)
    image = context_rgb(ctx)
    palette = ctx.palette or colors.PALETTE
    base, _ = fit_rgb(image if image is not None else np.zeros((*truth.shape, 3), dtype=np.uint8), IMAGE_MAX_SIDE)
    grey = (base.astype(np.float32).mean(axis=-1, keepdims=True) * 0.6).repeat(3, axis=-1)
    wrong = resize_nearest(truth != pred, base.shape[:2])
    grey[wrong] = ERROR_RGB
    agreement = mask_agreement(truth, pred)
    n_wrong = int(np.count_nonzero(truth != pred))
    return Group([
        row([panel("label", mask_picture(truth, image, opacity=ctx.mask_opacity, palette=palette, alt="label")),
             panel("prediction", mask_picture(pred, image, opacity=ctx.mask_opacity, palette=palette,
                                              alt="prediction")),
             panel("differences", picture(grey.astype(np.uint8), alt="differences"))]),
        mask_legend([truth, pred], ctx.class_names, palette, with_background=image is None),
        caption(f"pixel accuracy {fmt(agreement['pixel_accuracy'])}", f"mean IoU {fmt(agreement['mean_iou'])}",
                f"{n_wrong} pixels differ (red)"),
    ], cls="ev-item ev-comparison")


def _class_id(value: Any) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        array = to_numpy(value)
    except (TypeError, ValueError):
        return None
    if array.size != 1 or array.dtype.kind not in "iu":
        return None
    return int(array.reshape(()).item())


def _class_comparison(label: int, prediction: int, ctx: RenderContext) -> Node:
    def text(cls: int) -> str:
        name = ctx.class_name(cls)
        return f"{cls} ({name})" if name else str(cls)

    ok = label == prediction
    return Group([
        Group(["label ", Text(text(label), style="bold")], cls="ev-label", tag="span"),
        Group(["prediction ", Text(text(prediction), style="bold")], cls="ev-prediction", tag="span"),
        Badge("✓ correct" if ok else "✗ wrong", cls="ev-match" if ok else "ev-mismatch"),
    ], cls="ev-item ev-comparison ev-class-comparison")


def render_comparison(label: Item | None, prediction: Item | None, ctx: RenderContext = RenderContext()) -> Node:
    """A label and its prediction side by side; masks as overlays with an error map, class ids with a verdict."""
    if label is not None and prediction is not None:
        try:
            if {Kind.MASK, Kind.LOGITS} & {label.kind, prediction.kind}:
                return mask_comparison(label.value, prediction.value, ctx)
            ids = _class_id(label.value), _class_id(prediction.value)
            if ids[0] is not None and ids[1] is not None:
                return _class_comparison(ids[0], ids[1], ctx)
        except Exception:  # noqa: BLE001 - fall back to two independent panels
            logger.warning("comparing %r with %r failed; showing them apart", label.key, prediction.key,
                           exc_info=True)
    panels = []
    if label is not None:
        panels.append(panel(f"label · {label.key}" if label.key else "label", render_item(label, ctx)))
    if prediction is not None:
        panels.append(panel(f"prediction · {prediction.key}" if prediction.key else "prediction",
                            render_item(prediction, ctx)))
    return Group([row(panels)], cls="ev-comparison")
