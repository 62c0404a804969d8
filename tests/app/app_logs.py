"""A log in the plain reference layout, hand-made with ``joblib.dump``: what other tools already write.

``RUN/epoch_N/validation_scores.json`` and ``RUN/epoch_N/debugger/page_K.pkl`` holding ``{datapoint_idx:
{debugger_name: output}}``; no ``index.json``, nothing from our writer, so the reader has to find its way alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from eval_viewer.log_format import DEBUGGER_DIR, VALIDATION_SCORES, epoch_dir_name, page_name

__all__ = ["REFERENCE_N", "REFERENCE_EPOCHS", "REFERENCE_DEBUGGERS", "write_reference_log", "reference_scores"]

REFERENCE_N = 12
REFERENCE_EPOCHS = (0, 2)
REFERENCE_DEBUGGERS = ("features", "attn")


def _reference_datapoint(rng: np.random.Generator, idx: int) -> dict[str, Any]:
    """What a plain Pylon-style debugger list saves for one datapoint: a recorder dict, a feature map, attention."""
    h = w = 32
    yy, xx = np.mgrid[:h, :w]
    label = (((yy - 8 - idx % 8) ** 2 + (xx - 16) ** 2) < 60).astype(np.int64) + (xx > 26) * 2
    prediction = np.where(rng.random((h, w)) < 0.1 * (idx % 4), 0, label)
    image = np.stack([label * 0.3 + rng.random((h, w)) * 0.2, xx / w, yy / h]).astype(np.float32)  # (3, H, W)
    attention = rng.random((2, 16, 16)).astype(np.float32)
    return {
        "datapoint_recorder": {
            "inputs": {"image": image},
            "labels": {"mask": label},
            "outputs": {"mask": prediction},
            "meta_info": {"idx": idx, "source": f"shard_{idx % 3}", "difficulty": round(float(idx) / 10, 2)},
        },
        "features": rng.standard_normal((8, 16, 16)).astype(np.float32),
        "attn": {"attention": attention / attention.sum(-1, keepdims=True), "grid": (4, 4)},
    }


def write_reference_log(root: Path, seed: int = 0) -> Path:
    """A trainer run ``root/ref_run`` with two epochs in the plain reference layout; returns ``root``.

    ``iou`` (higher is better) has one missing value (null), which must rank worst; ``loss`` is lower-is-better.
    """
    rng = np.random.default_rng(seed)
    for epoch in REFERENCE_EPOCHS:
        epoch_dir = root / "ref_run" / epoch_dir_name(epoch)
        debug_dir = epoch_dir / DEBUGGER_DIR
        debug_dir.mkdir(parents=True)
        iou: list[float | None] = [round(float(v), 4) for v in rng.uniform(0.2, 0.95, REFERENCE_N)]
        iou[5] = None
        loss = [round(float(v), 4) for v in rng.uniform(0.05, 1.5, REFERENCE_N)]
        finite = [v for v in iou if v is not None]
        scores = {"aggregated": {"iou": sum(finite) / len(finite), "loss": sum(loss) / len(loss)},
                  "per_datapoint": {"iou": iou, "loss": loss}}
        (epoch_dir / VALIDATION_SCORES).write_text(json.dumps(scores))
        for page, start in enumerate(range(0, REFERENCE_N, 5)):
            joblib.dump({idx: _reference_datapoint(rng, idx) for idx in range(start, min(start + 5, REFERENCE_N))},
                        debug_dir / page_name(page))
    return root




def reference_scores(root: Path, epoch: int) -> dict[str, list[float | None]]:
    """The per-datapoint scores as written (the tests' own oracle, read without the backend)."""
    path = root / "ref_run" / epoch_dir_name(epoch) / VALIDATION_SCORES
    return json.loads(path.read_text())["per_datapoint"]
