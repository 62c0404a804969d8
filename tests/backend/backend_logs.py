"""Hand-made logs in the plain reference layout for the backend tests (joblib pages, scores JSON).

A module of its own (not conftest.py) so test modules import these helpers by a name no other test folder uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from eval_viewer.log_format import FORMAT_VERSION, INDEX_DEBUGGERS, INDEX_META, INDEX_PAGES, index_name, page_name

N = 12
"""Datapoints per epoch in the hand-made logs."""


def datapoint_outputs(idx: int, epoch: int | None = 0) -> dict[str, Any]:
    """What a capture of datapoint ``idx`` holds: a recorder record, a feature-map debugger, a gradcam debugger."""
    rng = np.random.default_rng(idx * 1000 + (epoch or 0) + 1)
    return {
        "recorder": {
            "inputs": {"image": rng.random((3, 16, 16), dtype=np.float32)},
            "labels": {"mask": rng.integers(0, 4, (16, 16)).astype(np.int64)},
            "outputs": {"mask": rng.integers(0, 4, (16, 16)).astype(np.int64), "logits": rng.random(4)},
            "meta_info": {"idx": idx, "name": f"img_{idx:03d}.png", "weight": float(idx) / 2},
        },
        "layer4": {
            "feature_map": rng.standard_normal((8, 4, 4)).astype(np.float32),
            "stats": {"mean": float(idx), "std": 1.0, "shape": (8, 4, 4)},
            "layer_name": "backbone.layer4",
        },
        "gradcam": rng.random((16, 16)).astype(np.float32),
    }


def scores_payload(n: int, epoch: int, classes: int = 3) -> dict[str, Any]:
    acc = [float((i * 7 + epoch) % 10) / 10 for i in range(n)]
    acc[1] = None  # a missing value
    loss = [1.0 - a if a is not None else float("nan") for a in acc]
    iou = [[(i + c) / (n + classes) for c in range(classes)] for i in range(n)]
    return {
        "aggregated": {"accuracy": 0.5 + epoch / 100, "loss": 0.5 - epoch / 100, "iou": [0.1, 0.2, 0.3]},
        "per_datapoint": {"accuracy": acc, "loss": loss, "iou": iou},
    }


def write_json(path: Path, payload: Any, allow_nan: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, allow_nan=allow_nan))
    return path


def write_pages(
    debug_dir: Path,
    indices: Sequence[int],
    per_page: int,
    epoch: int | None = 0,
    rank: int | None = None,
    with_index: bool = False,
    kinds: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, list[int]]:
    """Pages of ``per_page`` datapoints each (plain joblib.dump); an index.json per our format when asked."""
    debug_dir.mkdir(parents=True, exist_ok=True)
    pages: dict[str, list[int]] = {}
    for page_no, start in enumerate(range(0, len(indices), per_page)):
        chunk = list(indices[start : start + per_page])
        name = page_name(page_no, rank)
        joblib.dump({i: datapoint_outputs(i, epoch) for i in chunk}, debug_dir / name)
        pages[name] = chunk
    if with_index:
        write_json(
            debug_dir / index_name(rank),
            {
                "format_version": FORMAT_VERSION,
                "rank": rank,
                INDEX_PAGES: {name: {"indices": idx, "bytes": 0} for name, idx in pages.items()},
                INDEX_DEBUGGERS: {
                    name: {"class": "tests.Fake", "kinds": dict(k)} for name, k in (kinds or {}).items()
                },
                INDEX_META: {str(i): {"name": f"img_{i:03d}.png", "weight": i / 2} for i in indices},
            },
        )
    return pages
