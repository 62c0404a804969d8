"""What a promptable model (SAM, SAM2 and kin) was asked, per object: the record training snapshots draw and save.

A :class:`PromptData` is one prompt of one object: clicked points with their labels, a box, or a mask. It holds plain
numpy arrays (torch tensors are converted on construction, so a record never pins a GPU tensor or shares memory the
training step will overwrite), checks its shapes once, and says in the error what is wrong. Coordinates are input
pixels, ``x`` (column) first, as SAM takes them. The drawing lives in :mod:`eval_viewer.display.composite`; the
writer that saves and logs composites in :mod:`eval_viewer.debuggers.snapshots`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

__all__ = ["PromptData", "PromptType", "POSITIVE", "NEGATIVE", "PADDING"]

PromptType = Literal["point", "box", "mask"]
POSITIVE = 1
"""Label of a point on the object (SAM's 1)."""
NEGATIVE = 0
"""Label of a point off the object (SAM's 0)."""
PADDING = -1
"""Label of a padding point (SAM's -1): kept in the record, never drawn."""
_LABELS = (POSITIVE, NEGATIVE, PADDING)


def _array(value: Any, dtype: Any) -> np.ndarray:
    """A private numpy copy of ``value`` (a torch tensor is detached and moved to the CPU first)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy() if dtype is np.float32 else value.detach().cpu().numpy()
    return np.array(value, dtype=dtype, copy=True)


@dataclass(frozen=True)
class PromptData:
    """One prompt of one object.

    ``type``: ``"point"`` (``points`` ``(K, 2)`` as ``[x, y]``, ``labels`` ``(K,)`` of 1 positive / 0 negative /
    -1 padding; all positive when omitted), ``"box"`` (``box`` ``(4,)`` as ``[x0, y0, x1, y1]``) or ``"mask"``
    (``mask`` ``(H, W)``, non-zero on the object). ``object_id`` is the object's position in the ground-truth and
    prediction stacks (0-based): its prompts and masks share a colour. ``frame``: for a clip, the frame the prompt
    was given on (None: every frame, or a single image).
    """

    type: PromptType
    object_id: int = 0
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    frame: int | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        what = f"PromptData(type={self.type!r}, object_id={self.object_id})"
        if self.type not in ("point", "box", "mask"):
            raise ValueError(f"{what}: type must be 'point', 'box' or 'mask'")
        if int(self.object_id) < 0:
            raise ValueError(f"{what}: object_id must be >= 0 (the object's position in the mask stacks)")
        object.__setattr__(self, "object_id", int(self.object_id))
        if self.frame is not None:
            object.__setattr__(self, "frame", int(self.frame))
        if self.type == "point":
            if self.points is None:
                raise ValueError(f"{what}: a point prompt needs points (K, 2)")
            points = _array(self.points, np.float32).reshape(-1, 2) if np.size(self.points) % 2 == 0 else None
            if points is None or np.ndim(self.points) not in (1, 2) or points.shape[0] == 0:
                raise ValueError(f"{what}: points must have shape (K, 2) with K >= 1, got {np.shape(self.points)}")
            labels = (np.full(len(points), POSITIVE, dtype=np.int64) if self.labels is None
                      else _array(self.labels, np.int64).reshape(-1))
            if labels.shape != (len(points),):
                raise ValueError(f"{what}: {len(points)} points but labels of shape {np.shape(self.labels)}")
            bad = sorted(set(labels.tolist()) - set(_LABELS))
            if bad:
                raise ValueError(f"{what}: point labels must be 1 (positive), 0 (negative) or -1 (padding), got "
                                 f"{bad} (a box goes in a box prompt)")
            object.__setattr__(self, "points", points)
            object.__setattr__(self, "labels", labels)
        elif self.type == "box":
            if self.box is None or np.size(self.box) != 4:
                raise ValueError(f"{what}: a box prompt needs box (4,) as [x0, y0, x1, y1], got "
                                 f"{None if self.box is None else np.shape(self.box)}")
            box = _array(self.box, np.float32).reshape(4)
            if not (box[2] >= box[0] and box[3] >= box[1]):
                raise ValueError(f"{what}: box {box.tolist()} is not [x0, y0, x1, y1] with x1 >= x0 and y1 >= y0")
            object.__setattr__(self, "box", box)
        else:
            if self.mask is None:
                raise ValueError(f"{what}: a mask prompt needs mask (H, W)")
            mask = _array(self.mask, np.float32)
            while mask.ndim > 2 and mask.shape[0] == 1:
                mask = mask[0]
            if mask.ndim != 2:
                raise ValueError(f"{what}: mask must have shape (H, W), got {np.shape(self.mask)}")
            object.__setattr__(self, "mask", mask > 0)

    @classmethod
    def point(cls, points: Any, labels: Any = None, object_id: int = 0, frame: int | None = None) -> PromptData:
        return cls("point", object_id, points=points, labels=labels, frame=frame)

    @classmethod
    def box_prompt(cls, box: Any, object_id: int = 0, frame: int | None = None) -> PromptData:
        return cls("box", object_id, box=box, frame=frame)

    @classmethod
    def mask_prompt(cls, mask: Any, object_id: int = 0, frame: int | None = None) -> PromptData:
        return cls("mask", object_id, mask=mask, frame=frame)

    def scaled(self, sx: float, sy: float, shape: tuple[int, int] | None = None) -> PromptData:
        """The same prompt on an image resized by ``sx`` (columns) and ``sy`` (rows); a mask prompt is resized
        (nearest) to ``shape``."""
        if self.type == "point":
            assert self.points is not None
            return replace(self, points=self.points * np.array([sx, sy], dtype=np.float32))
        if self.type == "box":
            assert self.box is not None
            return replace(self, box=self.box * np.array([sx, sy, sx, sy], dtype=np.float32))
        if shape is None or self.mask is None or self.mask.shape == tuple(shape):
            return self
        h, w = self.mask.shape
        rows = np.minimum((np.arange(shape[0]) + 0.5) * h / shape[0], h - 1).astype(np.int64)
        cols = np.minimum((np.arange(shape[1]) + 0.5) * w / shape[1], w - 1).astype(np.int64)
        return replace(self, mask=self.mask[rows[:, None], cols[None, :]])

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a page (numpy arrays, ints, strings): what :meth:`from_dict` reads back."""
        out: dict[str, Any] = {"type": self.type, "object_id": self.object_id}
        if self.frame is not None:
            out["frame"] = self.frame
        for name in ("points", "labels", "box", "mask"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> PromptData:
        return cls(str(value["type"]), int(value.get("object_id", 0)),  # type: ignore[arg-type]
                   points=value.get("points"), labels=value.get("labels"), box=value.get("box"),
                   mask=value.get("mask"), frame=value.get("frame"))
