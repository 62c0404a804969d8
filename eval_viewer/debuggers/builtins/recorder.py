"""The datapoint recorder: what went in, what was expected and what came out, so a run can be viewed alone.

Without it the viewer would need the dataset and the training code to show a datapoint. The recorder keeps each
datapoint's inputs, labels, the model's predictions and meta_info in the record layout every reader knows
(:data:`eval_viewer.log_format.RECORD_SECTIONS`), shrunk to a viewing size, and tags each value with its semantic
kind from the data it actually saw (integer 2-D maps are masks, ``(3, H, W)`` floats images...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from eval_viewer.debuggers.base import BaseDebugger
from eval_viewer.debuggers.builtins._tensors import downsample_spatial, resize_mask
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import RECORD_SECTIONS, Kind

__all__ = ["DatapointRecorder", "guess_kind"]

Predictions = Literal["argmax", "raw"]
_DEFAULT_KEYS = {"inputs": "image", "labels": "label", "outputs": "prediction", "meta_info": "value"}


def guess_kind(value: Any) -> str | None:
    """Kind of a batched value ``(B, ...)`` from its dtype and shape; None when the reader should decide."""
    if isinstance(value, (list, np.ndarray)) and not isinstance(value, torch.Tensor):
        return Kind.TEXT if np.asarray(value).dtype.kind in "US" else Kind.SCALAR
    if not isinstance(value, torch.Tensor):
        return Kind.TEXT if isinstance(value, str) else Kind.SCALAR if isinstance(value, (int, float)) else None
    shape, integer = tuple(value.shape[1:]), not value.is_floating_point()
    if len(shape) == 0:
        return Kind.SCALAR
    if len(shape) == 1:
        return Kind.SERIES
    if len(shape) == 2:
        return Kind.MASK if integer else None  # a float map may be depth, a heatmap or a probability
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return Kind.IMAGE
    if len(shape) == 3:
        return Kind.FEATURE_MAP
    return None


def _is_image(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] in (1, 3, 4)


def _is_mask(x: torch.Tensor) -> bool:
    return x.dim() == 3 and (not x.is_floating_point()) and not x.is_complex()


def _small_int(x: torch.Tensor) -> torch.Tensor:
    """Class maps fit in uint8 almost always; a quarter of int32, an eighth of int64."""
    if x.dtype == torch.bool or (x.numel() and 0 <= int(x.min()) and int(x.max()) < 256):
        return x.to(torch.uint8)
    return x


class DatapointRecorder(BaseDebugger):
    """Record of each datapoint: ``{"inputs": {...}, "labels": {...}, "outputs": {...}, "meta_info": {...}}``.

    A section that is a tensor rather than a dict is stored under one key (``image``, ``label``, ``prediction``).
    Images ``(B, C, H, W)`` and masks ``(B, H, W)`` are shrunk so their longest side is at most ``max_side``
    (area-averaged / nearest). With ``compact`` (default) images in ``[0, 1]`` are stored as 8-bit (other float
    images as float16) and class maps as uint8, a quarter of the bytes. ``predictions="argmax"`` turns class logits
    into what the model predicted: a mask for ``(B, C, H, W)`` (``<key>_mask``), a class for ``(B, C)``
    (``<key>_class``), plus softmax probabilities with ``probabilities=True``. ``kinds`` maps dotted paths
    (``"inputs.image"``) to kinds where the guess from dtype and shape is wrong.
    """

    def __init__(
        self,
        max_side: int | None = 128,
        compact: bool = True,
        predictions: Predictions = "argmax",
        probabilities: bool = False,
        kinds: Mapping[str, str] | None = None,
        sections: Sequence[str] = RECORD_SECTIONS,
    ) -> None:
        unknown = set(sections) - set(RECORD_SECTIONS)
        if unknown:
            raise CaptureError(f"Unknown record sections {sorted(unknown)}; use some of {list(RECORD_SECTIONS)}")
        bad = {path: kind for path, kind in (kinds or {}).items() if kind not in Kind.ALL}
        if bad:
            raise CaptureError(f"Unknown kinds {bad}; use values of eval_viewer.log_format.Kind")
        if predictions not in ("argmax", "raw"):
            raise CaptureError(f"predictions must be 'argmax' or 'raw', got {predictions!r}")
        self.max_side = max_side
        self.compact = compact
        self.predictions = predictions
        self.probabilities = probabilities
        self.user_kinds = dict(kinds or {})
        self.sections = tuple(sections)
        self._kinds: dict[str, str] = {}

    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> dict[str, Any]:
        batch = _batch_size(datapoint)
        record: dict[str, Any] = {}
        for section in self.sections:
            value = datapoint.get(section)
            if value is None:
                continue
            entries = value if isinstance(value, Mapping) else {_DEFAULT_KEYS[section]: value}
            kept: dict[str, Any] = {}
            for key, item in entries.items():
                if section == "meta_info":
                    kept[str(key)] = _meta_value(item, batch)
                elif section == "outputs" and self.predictions == "argmax" and _is_logits(item):
                    kept.update(self._predictions(str(key), item.detach()))
                else:
                    kept[str(key)] = self._shrink(item)
            record[section] = kept
            for key, item in kept.items():
                kind = guess_kind(item)
                if kind is not None:
                    self._kinds[f"{section}.{key}"] = kind
        return record

    def _shrink(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        x = value.detach()
        if _is_mask(x):
            return _small_int(resize_mask(x, self.max_side)) if self.compact else resize_mask(x, self.max_side)
        if _is_image(x) and x.is_floating_point():
            x = downsample_spatial(x, self.max_side)
            if self.compact:
                in_unit = x.numel() > 0 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
                return (x * 255).round().to(torch.uint8) if in_unit else x.to(torch.float16)
            return x
        if _is_image(x):
            return downsample_spatial(x.float(), self.max_side).round().to(x.dtype)
        if x.dim() == 3 and x.is_floating_point():  # a float map (depth, heatmap): area-averaged like an image
            return downsample_spatial(x.unsqueeze(1), self.max_side).squeeze(1)
        return x

    def _predictions(self, key: str, logits: torch.Tensor) -> dict[str, Any]:
        name = "" if key == _DEFAULT_KEYS["outputs"] else f"{key}_"
        out: dict[str, Any] = {}
        if logits.dim() == 2:
            out[f"{name}class"] = logits.argmax(dim=1)
            if self.probabilities:
                out[f"{name}probabilities"] = logits.float().softmax(dim=1)
            return out
        mask = logits.argmax(dim=1)
        out[f"{name}mask"] = _small_int(resize_mask(mask, self.max_side)) if self.compact else resize_mask(
            mask, self.max_side
        )
        if self.probabilities:
            probs = downsample_spatial(logits.float().softmax(dim=1), self.max_side)
            out[f"{name}probabilities"] = probs.to(torch.float16) if self.compact else probs
        return out

    def kinds(self) -> dict[str, str]:
        return {**self._kinds, **self.user_kinds}


def _is_logits(value: Any) -> bool:
    """Class logits: float ``(B, C)`` or ``(B, C, H, W)`` with more than one class."""
    return (
        isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() in (2, 4) and value.shape[1] > 1
    )


def _batch_size(datapoint: Mapping[str, Any]) -> int | None:
    meta = datapoint.get("meta_info")
    idx = meta.get("idx") if isinstance(meta, Mapping) else None
    if isinstance(idx, (torch.Tensor, np.ndarray)):
        return int(idx.reshape(-1).shape[0])
    if isinstance(idx, (list, tuple)):
        return len(idx)
    return 1 if idx is not None else None


def _meta_value(value: Any, batch: int | None) -> Any:
    """A per-datapoint list (what ``default_collate`` makes of strings) becomes an array so the batch split finds it."""
    if isinstance(value, (list, tuple)) and batch is not None and len(value) == batch:
        arr = np.asarray(value)
        if arr.dtype != object and arr.ndim >= 1 and arr.shape[0] == batch:
            return arr
    return value
