"""Semantic kind of a saved value: the writer's tag when there is one, else a guess from its key, dtype and shape.

An ndarray is only storage; whether it is an image, a mask or a feature map decides how it is drawn (Spotlight's split
between storage type and semantic kind). Our writer tags what a debugger declares in ``index.json``; pages of other
tools carry no tags, so the reader guesses, first from the key name (``"gradcam"``, ``"depth"``...), checked against
the shape so that a name alone never sends a (64, 32, 32) tensor to the image renderer, then from dtype and shape
alone. Everything here is pure and cheap: attention detection looks at a few rows only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval_viewer.log_format import VIEWER_CLASS_NAMES, VIEWER_KINDS, VIEWER_PALETTE, Kind

__all__ = ["infer_kind", "items_of", "resolve_kind", "ViewerHints", "parse_viewer"]

logger = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_POINT_CLOUD_MIN_POINTS = 64
_ATTENTION_ROWS_CHECKED = 16

# Name rules, most specific first: "image_feats" is a feature map, "seg_logits" per-class scores, "gt" a mask only
# when it holds integers. Each is confirmed by the shape check of its kind below.
_NAME_RULES: tuple[tuple[str, frozenset[str], tuple[str, ...]], ...] = (
    (Kind.ATTENTION, frozenset({"attn", "attention", "attentions", "attns"}), ("attn", "attention")),
    (Kind.HEATMAP, frozenset({"gradcam", "cam", "saliency", "heatmap", "gradcampp"}), ("gradcam", "saliency")),
    (Kind.FEATURE_MAP, frozenset({"feature", "features", "feat", "feats", "fmap", "fmaps"}), ("feat",)),
    (Kind.LOGITS, frozenset({"logits", "logit", "probs", "prob", "probabilities", "probas", "softmax", "pred",
                             "preds", "prediction", "predictions", "seg", "segmentation", "scores"}),
     ("logit", "prob", "softmax")),
    (Kind.POINT_CLOUD, frozenset({"pointcloud", "pcd", "pc", "xyz", "cloud"}), ("pointcloud",)),
    (Kind.PROMPTS, frozenset({"points", "point", "boxes", "box", "bbox", "bboxes", "prompt", "prompts", "clicks"}),
     ("prompt",)),
    (Kind.DEPTH, frozenset({"depth", "disparity", "disp"}), ("depth",)),
    (Kind.MASK, frozenset({"mask", "masks", "seg", "segmentation", "label", "labels", "semantic", "gt", "gts",
                           "target", "targets", "groundtruth", "pred", "preds", "prediction", "predictions",
                           "classes", "argmax"}), ("mask", "seg")),
    (Kind.IMAGE, frozenset({"image", "images", "img", "imgs", "rgb", "photo", "input", "inputs"}), ("image",)),
)

def _tokens(key: str) -> list[str]:
    return _TOKEN_RE.findall(key.lower())


def _name_kinds(key: str) -> list[str]:
    """Kinds the key name suggests, most specific first (a key may suggest several)."""
    tokens = _tokens(key)
    found = []
    for kind, words, prefixes in _NAME_RULES:
        if any(t in words or t.startswith(prefixes) for t in tokens):
            found.append(kind)
    return found


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, np.number, np.bool_)) or (
        isinstance(value, np.ndarray) and value.ndim == 0
    )


def _is_stat_value(value: Any) -> bool:
    """A value a stats table can show in one cell: a scalar, a string, None, or a short tuple like a shape."""
    if _is_scalar(value) or value is None or isinstance(value, str):
        return True
    return isinstance(value, (list, tuple)) and len(value) <= 8 and all(_is_scalar(v) for v in value)


def _image_like(shape: tuple[int, ...]) -> bool:
    if len(shape) == 2:
        return min(shape) >= 2
    if len(shape) == 3:
        return (shape[0] in (1, 3, 4) and min(shape[1:]) >= 2) or (shape[2] in (1, 3, 4) and min(shape[:2]) >= 2)
    return False


def _map_like(shape: tuple[int, ...]) -> bool:
    """A single-channel map: (H, W) or (1, H, W)."""
    return (len(shape) == 2 and min(shape) >= 2) or (len(shape) == 3 and shape[0] == 1 and min(shape[1:]) >= 2)


def _is_integer(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iub"


def _squeeze_batch(arr: np.ndarray) -> np.ndarray:
    """Leading axes of length 1 dropped (a batch of one, as batch-first debuggers save a datapoint), down to 2 axes."""
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _class_scores(arr: np.ndarray) -> bool:
    """(C, H, W) float with C >= 2 classes: logits or probabilities per pixel."""
    return arr.ndim == 3 and arr.dtype.kind == "f" and arr.shape[0] >= 2 and min(arr.shape[1:]) >= 2


def _sums_to_one_over_classes(arr: np.ndarray) -> bool:
    """Whether a (C, H, W) float map looks like softmax over C: a few pixels checked, so O(C) whatever the size."""
    if not _class_scores(arr):
        return False
    probe = np.asarray(arr[:, :: max(1, arr.shape[1] // 4), :: max(1, arr.shape[2] // 4)], dtype=np.float64)
    if probe.size == 0 or not np.all(np.isfinite(probe)) or np.any(probe < 0) or np.any(probe > 1):
        return False
    return bool(np.allclose(probe.sum(axis=0), 1.0, atol=1e-3))


def _rows_sum_to_one(arr: np.ndarray) -> bool:
    """Whether the last axis looks like softmax rows; only a few rows are checked, so this stays O(1) in size."""
    if arr.dtype.kind != "f" or arr.shape[-1] < 2:
        return False
    rows = arr.reshape(-1, arr.shape[-1])[:_ATTENTION_ROWS_CHECKED].astype(np.float64)
    if rows.size == 0 or not np.all(np.isfinite(rows)) or np.any(rows < 0):
        return False
    return bool(np.allclose(rows.sum(axis=-1), 1.0, atol=1e-3))


_SHAPE_CHECKS: dict[str, Callable[[np.ndarray], bool]] = {
    Kind.IMAGE: lambda a: _image_like(a.shape),
    Kind.MASK: lambda a: _map_like(a.shape) and _is_integer(a),
    Kind.DEPTH: lambda a: _map_like(a.shape) and a.dtype.kind in "fiu",
    Kind.HEATMAP: lambda a: _map_like(a.shape) or a.ndim == 3,
    Kind.ATTENTION: lambda a: a.ndim in (2, 3, 4) and a.dtype.kind == "f",
    Kind.FEATURE_MAP: lambda a: a.ndim >= 3 and a.dtype.kind in "fiu" and min(a.shape[-2:]) >= 2,
    Kind.LOGITS: _class_scores,
    Kind.POINT_CLOUD: lambda a: a.ndim == 2 and a.shape[1] >= 3,
    Kind.PROMPTS: lambda a: a.ndim <= 2 and (a.ndim < 2 or a.shape[-1] in (2, 3, 4, 5)),
}


def _array_kind(key: str, arr: np.ndarray) -> str:
    if arr.ndim == 0:
        return Kind.SCALAR
    if arr.dtype.kind in "OUSV":
        return Kind.TEXT if arr.dtype.kind in "US" and arr.ndim <= 1 else Kind.UNKNOWN
    arr = _squeeze_batch(arr)
    for kind in _name_kinds(key):
        if _SHAPE_CHECKS[kind](arr):
            return kind
    shape = arr.shape
    if arr.ndim == 1:
        return Kind.SERIES
    if arr.ndim == 2:
        if _is_integer(arr) and min(shape) >= 2 and shape[1] > 5:
            return Kind.MASK
        if shape[0] >= _POINT_CLOUD_MIN_POINTS and 3 <= shape[1] <= 6:
            return Kind.POINT_CLOUD
        if arr.dtype.kind == "f" and shape[0] >= 2 and shape[0] == shape[1] and _rows_sum_to_one(arr):
            return Kind.ATTENTION
        return Kind.IMAGE if min(shape) >= 8 else Kind.UNKNOWN
    if arr.ndim == 3:
        if _sums_to_one_over_classes(arr) and not _rows_sum_to_one(arr):
            return Kind.LOGITS
        if (shape[0] in (1, 3) and min(shape[1:]) >= 2) or (shape[2] in (3, 4) and min(shape[:2]) >= 5):
            return Kind.IMAGE
        if _rows_sum_to_one(arr):
            return Kind.ATTENTION
        if arr.dtype.kind in "fiu" and shape[0] >= 2 and min(shape[1:]) >= 2:
            return Kind.FEATURE_MAP
    if arr.ndim >= 4:
        if arr.ndim == 4 and _rows_sum_to_one(arr):
            return Kind.ATTENTION
        if arr.dtype.kind in "fiu" and min(shape[-2:]) >= 2:
            return Kind.FEATURE_MAP  # (C, D, H, W), a batch of maps...: leading axes become channels
    return Kind.UNKNOWN


def infer_kind(key: str, value: Any) -> str:
    """Best guess of the semantic kind of ``value`` saved under ``key`` (a dotted path; its last part matters most).

    Order: Python type (text, scalar, stats dict), then key-name rules confirmed by shape, then dtype and shape alone.
    Unknown rather than wrong: the unknown renderer still shows a summary.
    """
    if value is None:
        return Kind.UNKNOWN
    if isinstance(value, str):
        return Kind.TEXT
    if _is_scalar(value):
        return Kind.SCALAR
    if isinstance(value, Mapping):
        if value and all(_is_stat_value(v) for v in value.values()):
            return Kind.STATS
        return Kind.UNKNOWN
    if isinstance(value, (list, tuple)):
        if not value:
            return Kind.UNKNOWN
        if all(isinstance(v, str) for v in value):
            return Kind.TEXT
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            return Kind.UNKNOWN
        if arr.dtype.kind not in "biuf":
            return Kind.UNKNOWN
        return _array_kind(key.rsplit(".", 1)[-1], arr)
    if isinstance(value, np.ndarray):
        return _array_kind(key.rsplit(".", 1)[-1], value)
    return Kind.UNKNOWN


def resolve_kind(path: str, value: Any, tags: Mapping[str, str], name_hint: str = "") -> str:
    """The writer's tag for ``path`` when it is a known kind, else :func:`infer_kind`.

    ``name_hint`` replaces an empty key for inference: a debugger named ``gradcam`` that returns a bare array is a
    heatmap.
    """
    tag = tags.get(path)
    if tag is not None:
        if tag in Kind.ALL:
            return tag
        logger.warning("Ignoring unknown kind tag %r for %r; inferring it instead", tag, path)
    key = path.rsplit(".", 1)[-1] if path else ""
    return infer_kind(key or name_hint, value)


_PAYLOAD_KINDS = frozenset({
    Kind.IMAGE, Kind.MASK, Kind.DEPTH, Kind.HEATMAP, Kind.PROMPTS, Kind.POINT_CLOUD, Kind.FEATURE_MAP, Kind.ATTENTION,
    Kind.SERIES,
})
"""Kinds whose renderers take a dict too: the array to draw plus annotations (a grid, a target class...)."""


def _is_annotation(value: Any) -> bool:
    """A value that describes another rather than standing alone: a scalar, a string, a shape or a few indices."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.size <= 8 and value.dtype.kind in "biuf":
        return True
    return _is_stat_value(value)


def _annotated_payload(output: Mapping[str, Any], tags: Mapping[str, str], name_hint: str) -> tuple[str, str] | None:
    """``(key, kind)`` of the one drawable value of a debugger output whose other values only annotate it, else None.

    ``{"attention": (heads, Lq, Lk), "grid": [4, 4]}`` or ``{"gradcam": (H, W), "target_class": 3}`` is one thing
    to look at: split into items, the attention map would lose the grid that places it on the image and the class
    would float apart from its map. Kept whole, the renderer draws the array and uses or captions the rest.
    """
    payloads = [key for key, value in output.items() if not _is_annotation(value)]
    if len(payloads) != 1 or len(output) == 1:
        return None
    key = str(payloads[0])
    kind = resolve_kind(key, output[payloads[0]], tags, name_hint)
    return (key, kind) if kind in _PAYLOAD_KINDS else None


def items_of(output: Any, tags: Mapping[str, str], prefix: str = "", name_hint: str = "") -> list[tuple[str, str, Any]]:
    """``(key, kind, value)`` for one debugger output or one recorder section, flattened one level deep.

    A dict gives one item per key (tags looked up as ``prefix + key``, e.g. ``"inputs.image"``); anything else gives
    one item with key ``""`` (tag ``prefix`` without its dot, or ``""`` for a debugger's whole output). A debugger
    output tagged as a whole (``{"": kind}``) stays one item, and so does one drawable value with annotations beside
    it (:func:`_annotated_payload`).
    """
    if isinstance(output, Mapping) and not prefix:
        whole = tags.get("")
        if whole in Kind.ALL:
            return [("", whole, output)]
        payload = _annotated_payload(output, tags, name_hint)
        if payload is not None:
            return [(payload[0], payload[1], output)]
    if isinstance(output, Mapping):
        return [
            (str(key), resolve_kind(f"{prefix}{key}", value, tags, name_hint), value) for key, value in output.items()
        ]
    whole = prefix[:-1] if prefix.endswith(".") else prefix
    return [("", resolve_kind(whole, output, tags, name_hint=name_hint or whole), output)]


@dataclass(frozen=True)
class ViewerHints:
    """What a log declares in its viewer sidecar (:data:`~eval_viewer.log_format.VIEWER_FILE`), checked."""

    kinds: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """``{debugger name: {dotted key: kind}}``, known kinds only."""
    class_names: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    problems: tuple[str, ...] = ()
    """What was ignored and why, for the datapoint view's problem list."""

    def merged(self, other: ViewerHints) -> ViewerHints:
        """``other`` over ``self``, key by key (kinds debugger by debugger)."""
        kinds = {name: dict(tags) for name, tags in self.kinds.items()}
        for name, tags in other.kinds.items():
            kinds.setdefault(name, {}).update(tags)
        return ViewerHints(kinds, other.class_names if other.class_names is not None else self.class_names,
                           other.palette if other.palette is not None else self.palette,
                           self.problems + other.problems)


def _colour(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        return (int(value[0]), int(value[1]), int(value[2]))
    return None


def parse_viewer(payload: Any, where: str) -> ViewerHints:
    """The hints of one sidecar's JSON object; anything malformed is dropped and named in ``problems``."""
    if not isinstance(payload, Mapping):
        return ViewerHints(problems=(f"{where}: not a JSON object; ignored",))
    problems: list[str] = []
    kinds: dict[str, dict[str, str]] = {}
    raw_kinds = payload.get(VIEWER_KINDS, {})
    if isinstance(raw_kinds, Mapping):
        for name, tags in raw_kinds.items():
            if not isinstance(tags, Mapping):
                problems.append(f"{where}: {VIEWER_KINDS}.{name} is not an object; ignored")
                continue
            for key, kind in tags.items():
                if kind in Kind.ALL:
                    kinds.setdefault(str(name), {})[str(key)] = str(kind)
                else:
                    problems.append(f"{where}: unknown kind {kind!r} for {name}.{key} (known: {', '.join(Kind.ALL)})")
    else:
        problems.append(f"{where}: {VIEWER_KINDS} is not an object; ignored")
    names = payload.get(VIEWER_CLASS_NAMES)
    class_names = None
    if names is not None:
        if isinstance(names, list) and all(isinstance(n, (str, int, float)) for n in names):
            class_names = tuple(str(n) for n in names)
        else:
            problems.append(f"{where}: {VIEWER_CLASS_NAMES} is not a list of names; ignored")
    raw_palette = payload.get(VIEWER_PALETTE)
    palette = None
    if raw_palette is not None:
        colours = [_colour(c) for c in raw_palette] if isinstance(raw_palette, list) else [None]
        if colours and all(c is not None for c in colours):
            palette = tuple(c for c in colours if c is not None)
        else:
            problems.append(f"{where}: {VIEWER_PALETTE} must be a list of [r, g, b] or \"#rrggbb\"; ignored")
    return ViewerHints(kinds, class_names, palette, tuple(problems))
