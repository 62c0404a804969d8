"""Training composites: the input, its ground truth, the prompts given and the predictions, in one RGB picture.

One picture per datapoint, so it can go anywhere a picture goes: a PNG beside the log, an experiment logger's image
(TensorBoard, W&B, Lightning loggers), the app's Training tab, a report. Panels are titled in the picture itself
(a logger shows no caption): ``input + prompts``, ``ground truth``, ``prediction``; a single image is one row of
panels, a clip ``(T, C, H, W)`` one row per panel with its kept frames (every ``frame_stride``-th, at most
``max_frames``) as columns.

Object ``k`` of a per-object mask stack, and every prompt with ``object_id=k``, is drawn in the palette colour of
class ``k + 1`` (:func:`eval_viewer.display.colors.class_color`), so a prompt and its masks match; a class map
(``activation="argmax"``) keeps its class colours. Masks are blended and outlined by
:func:`eval_viewer.display.masks.overlay_mask`, one object at a time, so overlapping objects both stay visible.
Prompts: a positive point is a filled disc with a white ring, a negative one an ``x`` (shape, not only colour,
tells them apart), padding points (label -1) are not drawn, a box is its outline, a mask prompt its outline.

Pure numpy and Pillow: nothing here touches a file or imports torch (tensors are converted by
:func:`eval_viewer.display.arrays.to_numpy`). Prompts are anything with the fields of
:class:`eval_viewer.debuggers.prompts.PromptData`, or their ``to_dict`` form as saved in a page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from eval_viewer.backend.model import DatapointRecord
from eval_viewer.display.arrays import to_numpy
from eval_viewer.display.colors import PALETTE, class_color
from eval_viewer.display.encode import fit_rgb, png_bytes, resize_nearest
from eval_viewer.display.figures import caption, fmt, panel
from eval_viewer.display.images import image_to_rgb
from eval_viewer.display.masks import mask_to_classes, outline, overlay_mask
from eval_viewer.display.view import Group, Image, Node, Problem
from eval_viewer.log_format import SNAPSHOT_COMPOSITE, SNAPSHOT_DEBUGGER

__all__ = ["Activation", "PanelBox", "Composite", "MaskLayers", "composite", "clip_frames", "mask_layers",
           "object_color", "BAND", "GAP", "snapshot_card", "snapshot_caption"]

Activation = Literal["sigmoid", "argmax", "none"]
"""How predictions become masks: ``sigmoid`` (per-object logits ``(N, H, W)``, thresholded), ``argmax`` (per-class
logits ``(C, H, W)`` to a class map) or ``none`` (already masks: a stack of binary masks or a class map)."""
BAND = 14
"""Height of the title band above each panel, in pixels."""
GAP = 4
"""White space between panels."""
_MIN_SIDE = 128
_BAND_RGB = (33, 37, 41)
_GAP_RGB = (255, 255, 255)

MaskLayers = list[tuple[int, np.ndarray]]
"""``[(colour class, boolean (H, W) mask), ...]``, drawn in order."""


@dataclass(frozen=True)
class PanelBox:
    """Where one panel's pixels are in the composite: ``x0, y0`` of its image (below its band), its size, and the
    scale from the input's pixels (``sx``, ``sy``: composite pixels per input pixel)."""

    name: str
    frame: int
    x0: int
    y0: int
    width: int
    height: int
    sx: float
    sy: float

    def to_pixel(self, x: float, y: float) -> tuple[int, int]:
        """Composite ``(column, row)`` of input pixel coordinates ``(x, y)`` (x first, as prompts are given)."""
        return (self.x0 + min(int(x * self.sx), self.width - 1), self.y0 + min(int(y * self.sy), self.height - 1))


@dataclass(frozen=True)
class Composite:
    rgb: np.ndarray
    """``(H, W, 3)`` uint8."""
    panels: tuple[PanelBox, ...]
    frames: tuple[int, ...]
    """The clip frames shown (``(0,)`` for a single image)."""


def object_color(object_id: int, palette: Sequence[tuple[int, int, int]] = PALETTE) -> tuple[int, int, int]:
    """The colour of object ``object_id`` (0-based): class ``object_id + 1``'s."""
    return class_color(int(object_id) + 1, tuple(palette))


def clip_frames(num_frames: int, frame_stride: int = 1, max_frames: int = 8) -> list[int]:
    """The frames of a clip that are drawn: every ``frame_stride``-th from 0, at most ``max_frames``."""
    if frame_stride < 1 or max_frames < 1:
        raise ValueError(f"frame_stride and max_frames must be >= 1, got {frame_stride}, {max_frames}")
    return list(range(0, int(num_frames), int(frame_stride)))[: int(max_frames)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.nan_to_num(x.astype(np.float32), nan=-np.inf)))


def mask_layers(value: Any, activation: Activation, *, threshold: float = 0.5, prediction: bool = False) -> MaskLayers:
    """Masks of one frame as layers. ``(N, H, W)``: one object per entry (colour ``k + 1``); ``(H, W)``: a class map
    (its classes) or, for sigmoid predictions, one object's logits. ``prediction`` applies ``activation``: sigmoid
    and threshold, or argmax over ``C``; ground truth is taken as it is (a ``(C, H, W)`` one-hot or score stack
    under ``argmax`` becomes its class map)."""
    array = to_numpy(value)
    if array.ndim == 3 and array.shape[0] == 1 and activation == "argmax":
        array = array[0]
    if array.ndim not in (2, 3):
        raise ValueError(f"a mask needs shape (H, W) or (N, H, W), got {tuple(array.shape)}")
    if activation == "argmax" and (array.ndim == 3 or prediction):
        classes = mask_to_classes(array)
        return [(int(c), classes == c) for c in np.unique(classes) if c != 0]
    if prediction and activation == "sigmoid" and array.dtype.kind == "f":
        binary = _sigmoid(array) > threshold
        stack = binary if binary.ndim == 3 else binary[None]
        return [(k + 1, m) for k, m in enumerate(stack)]
    if array.ndim == 3:
        return [(k + 1, np.asarray(m) != 0) for k, m in enumerate(array)]
    classes = mask_to_classes(array)
    return [(int(c), classes == c) for c in np.unique(classes) if c != 0]


def _overlay(base: np.ndarray, layers: MaskLayers, opacity: float,
             palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    out = base
    for color_class, mask in layers:
        if mask.shape != base.shape[:2]:
            mask = resize_nearest(mask, base.shape[:2])
        out = overlay_mask(out, mask.astype(np.int64) * color_class, opacity, tuple(palette))
    return out


def _field(prompt: Any, name: str) -> Any:
    return prompt.get(name) if isinstance(prompt, Mapping) else getattr(prompt, name, None)


def _draw_prompts(panel: np.ndarray, prompts: Sequence[Any], frame: int, sx: float, sy: float,
                  palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """``prompts`` of ``frame`` drawn on ``panel`` (input pixels scaled by ``sx``, ``sy``)."""
    mine = [p for p in prompts if _field(p, "frame") is None or int(_field(p, "frame")) == frame]
    if not mine:
        return panel
    h, w = panel.shape[:2]
    out = panel.copy()
    for prompt in mine:  # mask outlines first: points and boxes stay on top
        mask = _field(prompt, "mask")
        if _field(prompt, "type") == "mask" and mask is not None:
            small = resize_nearest(np.asarray(mask) != 0, (h, w))
            edge = outline(small.astype(np.int64))
            edge[1:] |= edge[:-1]  # two pixels wide: seen at a glance
            edge[:, 1:] |= edge[:, :-1]
            out[edge] = object_color(int(_field(prompt, "object_id") or 0), palette)
    image = PILImage.fromarray(out)
    draw = ImageDraw.Draw(image)
    radius = max(4, round(min(h, w) / 32))
    for prompt in mine:
        color = object_color(int(_field(prompt, "object_id") or 0), palette)
        kind = _field(prompt, "type")
        if kind == "box":
            x0, y0, x1, y1 = (float(v) for v in np.asarray(_field(prompt, "box")).reshape(4))
            draw.rectangle((x0 * sx - 1, y0 * sy - 1, x1 * sx + 1, y1 * sy + 1), outline=(0, 0, 0), width=1)
            draw.rectangle((x0 * sx, y0 * sy, x1 * sx, y1 * sy), outline=color, width=2)
        elif kind == "point":
            points = np.asarray(_field(prompt, "points"), dtype=np.float32).reshape(-1, 2)
            labels = _field(prompt, "labels")
            labels = np.ones(len(points), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
            for (x, y), label in zip(points.tolist(), labels.tolist()):
                cx, cy = x * sx, y * sy
                if label == 1:
                    draw.ellipse((cx - radius - 1, cy - radius - 1, cx + radius + 1, cy + radius + 1), fill=(0, 0, 0))
                    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=color,
                                 outline=(255, 255, 255), width=max(1, radius // 3))
                    draw.point((cx, cy), fill=color)
                elif label == 0:
                    for dx in (-1, 1):
                        draw.line((cx - radius, cy - dx * radius, cx + radius, cy + dx * radius), fill=(0, 0, 0),
                                  width=max(3, radius // 2 + 2))
                    for dx in (-1, 1):
                        draw.line((cx - radius, cy - dx * radius, cx + radius, cy + dx * radius), fill=color,
                                  width=max(1, radius // 2))
    return np.asarray(image)


_SHORT_TITLES = {"input + prompts": "input", "ground truth": "truth", "prediction": "pred"}
"""What a title becomes on a panel too narrow for it (a small snapshot), rather than cut mid-word."""


def _band(width: int, text: str) -> np.ndarray:
    image = PILImage.new("RGB", (width, BAND), _BAND_RGB)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    name, sep, frame = text.partition(" · ")
    for candidate in (text, f"{_SHORT_TITLES.get(name, name)}{sep}{frame}", _SHORT_TITLES.get(name, name)):
        if draw.textlength(candidate, font=font) <= width - 4:
            text = candidate
            break
    else:
        text = _SHORT_TITLES.get(name, name)
    draw.text((3, 1), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def _frame_of(value: Any, t: int | None) -> Any:
    if value is None or t is None:
        return value
    return to_numpy(value)[t]


def composite(
    image: Any,
    *,
    gt: Any = None,
    pred: Any = None,
    prompts: Sequence[Any] = (),
    activation: Activation = "sigmoid",
    threshold: float = 0.5,
    clip: bool | None = None,
    frame_stride: int = 1,
    max_frames: int = 8,
    max_side: int = 256,
    min_side: int = _MIN_SIDE,
    opacity: float = 0.5,
    palette: Sequence[tuple[int, int, int]] = PALETTE,
    frame_numbers: Sequence[int] | None = None,
) -> Composite:
    """The composite of one datapoint.

    ``image``: one frame (any layout :func:`~eval_viewer.display.images.image_to_rgb` reads) or, with ``clip``
    (default: a 4-D array), frames ``(T, C, H, W)`` / ``(T, H, W, C)``; ``gt`` and ``pred``: masks of the same
    frames (see :func:`mask_layers`; a clip's with a leading ``T``), either may be None; ``prompts``: in input
    pixels. Panels are resized to at most ``max_side`` and, for small inputs, enlarged (nearest) to ``min_side``
    so markers stay readable. ``frame_numbers``: the clip frame number of each given frame, when the frames given
    are already a selection (titles and prompts' ``frame`` use them).
    """
    frames_in = to_numpy(image) if not hasattr(image, "shape") or hasattr(image, "detach") else image
    is_clip = (np.ndim(frames_in) == 4) if clip is None else bool(clip)
    if is_clip and np.ndim(frames_in) != 4:
        raise ValueError(f"a clip needs shape (T, C, H, W) or (T, H, W, C), got {tuple(np.shape(frames_in))}")
    frames = clip_frames(np.shape(frames_in)[0], frame_stride, max_frames) if is_clip else [0]
    if not frames:
        raise ValueError("the clip has no frames")
    columns: list[list[tuple[str, np.ndarray, float, float]]] = []
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(int(np.shape(frames_in)[0])))
    if is_clip and len(numbers) != np.shape(frames_in)[0]:
        raise ValueError(f"{len(numbers)} frame numbers for {np.shape(frames_in)[0]} frames")
    for t in frames:
        number = numbers[t] if is_clip else 0
        rgb = image_to_rgb(np.asarray(frames_in)[t] if is_clip else frames_in)
        in_h, in_w = rgb.shape[:2]
        base, _ = fit_rgb(rgb, max_side)
        factor = max(1, math.ceil(min_side / max(base.shape[:2])))
        if factor > 1:
            base = np.repeat(np.repeat(base, factor, axis=0), factor, axis=1)
        sx, sy = base.shape[1] / in_w, base.shape[0] / in_h
        label = f" · t={number}" if is_clip else ""
        column = [(f"input + prompts{label}", _draw_prompts(base, prompts, number, sx, sy, palette), sx, sy)]
        if gt is not None:
            layers = mask_layers(_frame_of(gt, t if is_clip else None), activation, threshold=threshold)
            column.append((f"ground truth{label}", _overlay(base, layers, opacity, palette), sx, sy))
        if pred is not None:
            layers = mask_layers(_frame_of(pred, t if is_clip else None), activation, threshold=threshold,
                                 prediction=True)
            drawn = _overlay(base, layers, opacity, palette)
            column.append((f"prediction{label}", _draw_prompts(drawn, prompts, number, sx, sy, palette), sx, sy))
        columns.append(column)
    return _layout(columns, [numbers[t] for t in frames] if is_clip else frames, is_clip)


def _layout(columns: list[list[tuple[str, np.ndarray, float, float]]], frames: list[int], is_clip: bool) -> Composite:
    """Panels on a white grid with title bands: one row per panel kind and one column per frame for a clip, one row
    of panels for a single image."""
    grid = [list(r) for r in zip(*columns)] if is_clip else [columns[0]]  # grid[row][col]
    cell_h = max(p.shape[0] for row in grid for _, p, _, _ in row) + BAND
    cell_w = max(p.shape[1] for row in grid for _, p, _, _ in row)
    n_rows, n_cols = len(grid), max(len(row) for row in grid)
    out = np.full((n_rows * cell_h + (n_rows - 1) * GAP, n_cols * cell_w + (n_cols - 1) * GAP, 3), _GAP_RGB,
                  dtype=np.uint8)
    panels = []
    for r, row in enumerate(grid):
        for c, (name, pixels, sx, sy) in enumerate(row):
            y, x = r * (cell_h + GAP), c * (cell_w + GAP)
            out[y:y + BAND, x:x + cell_w] = _band(cell_w, name)
            ph, pw = pixels.shape[:2]
            out[y + BAND:y + BAND + ph, x:x + pw] = pixels
            panels.append(PanelBox(name.split(" · ")[0], frames[c] if is_clip else frames[0], x, y + BAND, pw, ph,
                                   sx, sy))
    return Composite(out, tuple(panels), tuple(frames))



# ----------------------------------------------------------------------------------------------- views of snapshots
def snapshot_caption(record: DatapointRecord) -> str:
    """``#1 · sample 101 · iou 0.25 · loss 0.31``: which datapoint of the snapshot, and its scores."""
    sample = record.meta_info.get("sample")
    parts = [f"#{record.idx}", None if sample is None else f"sample {sample}"]
    parts += [f"{name} {fmt(value)}" for name, value in record.scores.items()]
    return " · ".join(p for p in parts if p)


def snapshot_card(record: DatapointRecord, title: str) -> Node:
    """One saved composite as a plain picture under ``title``, its caption below; what could not be read, said."""
    item = next((i for i in record.debug.get(SNAPSHOT_DEBUGGER, ()) if i.key == SNAPSHOT_COMPOSITE), None)
    data = {"step": str(record.pass_key.step), "idx": str(record.idx)}
    if item is None or getattr(item.value, "ndim", 0) != 3:
        body: Node = Problem("No composite", items=record.problems or ("this datapoint saved no composite",))
    else:
        rgb = np.asarray(item.value, dtype=np.uint8)
        body = Image.from_png(png_bytes(rgb), width=int(rgb.shape[1]), height=int(rgb.shape[0]),
                              alt=f"{title}: composite", cls="ev-composite")
    card = panel(title, [body, caption(snapshot_caption(record))], "ev-panel ev-snapshot")
    return Group(card.children, cls=card.cls, tag=card.tag, data=data)
