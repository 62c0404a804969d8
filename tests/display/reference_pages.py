"""A log in the plain reference layout as another project's own debuggers write it: batch-first values of a batch of
one under plain names, int64 class maps, logits, a ``(1, C, h, w)`` feature map, attention and a stats dict, written
with ``joblib.dump`` (no ``index.json``, no recorder: that tool's viewer rebuilt the dataset to show the inputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from eval_viewer.log_format import DEBUGGER_DIR, VALIDATION_SCORES, epoch_dir_name, page_name

__all__ = ["N", "CLASS_NAMES", "write_pages", "datapoint"]

N = 4
CLASS_NAMES = ["background", "disc", "edge"]


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def datapoint(rng: np.random.Generator, idx: int) -> dict[str, Any]:
    h = w = 32
    yy, xx = np.mgrid[:h, :w]
    gt = (((yy - 12 - idx) ** 2 + (xx - 16) ** 2) < 60).astype(np.int64) + (xx > 26) * 2
    pred = np.where(rng.random((h, w)) < 0.1, 0, gt)
    logits = np.stack([(pred == c) * 4.0 for c in range(3)]).astype(np.float32) + rng.standard_normal((3, h, w))
    image = np.stack([gt * 0.3 + rng.random((h, w)) * 0.2, xx / w, yy / h]).astype(np.float32)
    return {
        "sample": {"image": image[None], "gt": gt[None], "pred": pred[None], "logits": logits[None].astype(np.float32)},
        "backbone": {"feature_map": rng.standard_normal((1, 16, 8, 8)).astype(np.float32)},
        "attention": {"attn": _softmax(rng.standard_normal((1, 2, 16, 16)), -1)},
        "stats": {"mean": 0.12, "std": 1.3, "max": 4.5, "dead_fraction": 0.25},
    }


def write_pages(root: Path, viewer: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """``root/ref_run/epoch_0`` with scores and one page of :data:`N` datapoints; ``viewer``: a ``viewer.json`` beside
    the pages. Returns ``root``."""
    rng = np.random.default_rng(seed)
    epoch_dir = root / "ref_run" / epoch_dir_name(0)
    debug_dir = epoch_dir / DEBUGGER_DIR
    debug_dir.mkdir(parents=True)
    scores = {"aggregated": {"iou": 0.5}, "per_datapoint": {"iou": [0.5 + 0.1 * i for i in range(N)]}}
    (epoch_dir / VALIDATION_SCORES).write_text(json.dumps(scores))
    joblib.dump({idx: datapoint(rng, idx) for idx in range(N)}, debug_dir / page_name(0))
    if viewer is not None:
        (debug_dir / "viewer.json").write_text(json.dumps(viewer))
    return root
