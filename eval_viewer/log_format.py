"""The on-disk log format, shared by the writer (`eval_viewer.debuggers`) and the reader (`eval_viewer.backend`).

Nothing else in the project spells a file name or a JSON key of the log format: both sides import them from here,
so the writer and the reader cannot drift apart (the same split as TensorBoard's ``metadata.py`` modules).

Layout of a run (the Pylon layout, which other tools write and read too)::

    trainer run                              evaluator run
    RUN/epoch_0/validation_scores.json       RUN/evaluation_scores.json
    RUN/epoch_0/debugger/page_0.pkl          RUN/debugger/page_0.pkl
    RUN/epoch_0/debugger/index.json          RUN/debugger/index.json
    RUN/epoch_1/...

Scores file (list position = datapoint index)::

    {"aggregated": {metric: float | [float per class]},
     "per_datapoint": {metric: [float | [float per class] | null per datapoint]}}

Page file: a joblib pickle of ``{datapoint_idx: {debugger_name: output}}``. Plain ``joblib.load`` reads it. Our writer
stores arrays as numpy (never torch), so a reader can memory-map them.

Index file (ours, optional for readers): ``index.json`` beside the pages says which page holds which datapoint, the
format version, and each debugger's class and the semantic kinds of its output keys, so a reader opens one page per
datapoint and renders without guessing. Multi-process (DDP) evaluation writes rank-sharded pages
``page_rank{R}_{K}.pkl`` and ``index_rank{R}.json``; they still match the ``page_*.pkl`` glob of older readers.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "VALIDATION_SCORES",
    "EVALUATION_SCORES",
    "SCORE_FILES",
    "DEBUGGER_DIR",
    "INDEX_PAGES",
    "INDEX_DEBUGGERS",
    "INDEX_META",
    "INDEX_LAYER",
    "INDEX_FORWARD_POSITION",
    "RECORD_SECTIONS",
    "Kind",
    "KINDS_KEY",
    "epoch_dir_name",
    "parse_epoch_dir",
    "page_name",
    "parse_page_name",
    "index_name",
    "is_index_name",
    "scores_payload",
    "write_scores",
    "atomic_write_bytes",
    "atomic_write_text",
    "FILE_MODE",
    "checkpoint_epochs",
    "SPLIT_VAL",
    "SPLIT_TEST",
    "SPLIT_ORDER",
    "SPLIT_TRAIN",
    "TRAIN_DIR",
    "TRAINING_SCORES",
    "step_dir_name",
    "parse_step_dir",
    "SNAPSHOT_DEBUGGER",
    "SNAPSHOT_COMPOSITE",
    "VIEWER_FILE",
    "VIEWER_KINDS",
    "VIEWER_CLASS_NAMES",
    "VIEWER_PALETTE",
]

FORMAT_VERSION = 1

VALIDATION_SCORES = "validation_scores.json"
"""Scores of one validation pass of a trainer, in ``RUN/epoch_N/``."""
EVALUATION_SCORES = "evaluation_scores.json"
"""Scores of an evaluator run, at the run root."""
SCORE_FILES = (VALIDATION_SCORES, EVALUATION_SCORES)
DEBUGGER_DIR = "debugger"

SPLIT_VAL = "val"
"""The split of a trainer's ``epoch_N/validation_scores.json`` passes; their step is the epoch N."""
SPLIT_TEST = "test"
"""The split of an ``evaluation_scores.json`` pass (an evaluator run, or a trainer's final evaluation): no step."""
SPLIT_ORDER = (SPLIT_VAL, SPLIT_TEST)
SPLIT_TRAIN = "train"
"""The split of training snapshots (``RUN/train/step_N/``, written by ``eval_viewer.debuggers.snapshots``); their
step is the training step N. Never a run's default pass: a run opens on its evaluation passes."""
TRAIN_DIR = "train"
"""The folder of a run's training snapshots: ``RUN/train/step_N/debugger/page_*.pkl``, ``.../training_scores.json``
and a PNG per composite (``RUN/train/step_N/snapshot_{idx}.png``) for people browsing the folder."""
TRAINING_SCORES = "training_scores.json"
"""Per-datapoint scores of one training snapshot (same format as the other scores files), in ``RUN/train/step_N/``."""
SNAPSHOT_DEBUGGER = "snapshot"
"""Debugger name, in a training snapshot's pages, of the drawn composite and the prompts (and a clip's kept frames);
beside it ``record`` holds the datapoint record (inputs, labels, outputs, meta_info)."""
SNAPSHOT_COMPOSITE = "composite"
"""Item key of the composite: an ``(H, W, 3)`` uint8 RGB picture (:mod:`eval_viewer.display.composite`)."""
"""How splits are listed; splits a later layout adds come after these, alphabetically."""

AGGREGATED = "aggregated"
PER_DATAPOINT = "per_datapoint"

# Keys of index.json.
INDEX_VERSION = "format_version"
INDEX_RANK = "rank"
INDEX_PAGES = "pages"
"""``{page_file_name: {"indices": [datapoint idx, ...], "bytes": int}}``."""
INDEX_DEBUGGERS = "debuggers"
"""``{debugger_name: {"class": "module.Qualname", "kinds": {dotted key path: Kind}}}``."""

INDEX_LAYER = "layer"
"""In a debugger's ``debuggers`` entry: the dotted name of the layer a forward debugger hooks (absent for debuggers
that see the whole datapoint)."""
INDEX_FORWARD_POSITION = "forward_position"
"""In a debugger's ``debuggers`` entry: ``0, 1, ...``, the order in which the hooked layers finished their first call
of a captured forward pass (a layer finishes after every layer that feeds it, so this is the order data flows in;
debuggers on one layer share a position, a layer first seen in a later batch comes after those seen before). Absent
for whole-datapoint debuggers, layers that never ran, and logs written before it existed: readers then fall back to
the order of the debuggers in the page, and say so."""

INDEX_META = "meta"
"""``{str(datapoint_idx): {field: int | float | str | bool}}``: the scalar ``meta_info`` fields of every captured
datapoint, so a reader can tabulate them without opening a page."""
KINDS_KEY = "kinds"

# The viewer sidecar: what a log declares so the reader need not guess (any tool may write it, by hand too).
VIEWER_FILE = "viewer.json"
"""Optional sidecar beside the pages (``.../debugger/viewer.json``) or at the run root (``RUN/viewer.json``; the
folder beside the pages wins key by key). A JSON object with any of the keys below; unknown keys are ignored::

    {"kinds": {"sample": {"image": "image", "gt": "mask", "pred": "mask", "logits": "logits"}},
     "class_names": ["background", "road", "car"],
     "palette": [[0, 0, 0], "#56b4e9", [230, 159, 0]]}
"""
VIEWER_KINDS = "kinds"
"""``{debugger_name: {dotted key path: Kind}}``: as ``index.json``'s per-debugger ``kinds``, and winning over them."""
VIEWER_CLASS_NAMES = "class_names"
"""``[name of class 0, name of class 1, ...]``: shown in mask legends and beside class ids."""
VIEWER_PALETTE = "palette"
"""``[colour of class 0, colour of class 1, ...]``, each ``[r, g, b]`` (0..255) or ``"#rrggbb"``; class 0 stays
transparent over the image. Classes past the list's end take the built-in palette's colours."""

RECORD_SECTIONS = ("inputs", "labels", "outputs", "meta_info")
"""Keys of the datapoint recorder's output (``outputs`` = the model's predictions). Any debugger output that is a dict
whose keys are a subset of these and include ``inputs`` is read as a datapoint record, by our reader and others'."""

_EPOCH_RE = re.compile(r"^epoch_(\d+)$")
_STEP_RE = re.compile(r"^step_(\d+)$")
_PAGE_RE = re.compile(r"^page_(?:rank(\d+)_)?(\d+)\.pkl$")
_INDEX_RE = re.compile(r"^index(?:_rank(\d+))?\.json$")


class Kind:
    """Semantic kinds of saved values, separate from their storage type (an ndarray can be an image or a feature map).

    The writer tags what it knows; the reader infers the rest from key names, dtype and shape. The display registry
    is keyed by these strings.
    """

    IMAGE = "image"  # (H, W), (H, W, 3|4) or (3|1, H, W)
    MASK = "mask"  # integer class map (H, W)
    DEPTH = "depth"  # float map (H, W)
    HEATMAP = "heatmap"  # float map meant to be drawn over the input image (GradCAM, saliency)
    PROMPTS = "prompts"  # points (N, 2) / boxes (N, 4) / point labels
    POINT_CLOUD = "point_cloud"  # (N, 3+)
    FEATURE_MAP = "feature_map"  # (C, H, W), or more leading axes (flattened into channels)
    LOGITS = "logits"  # (C, H, W) per-class logits or probabilities: drawn as the arg-max class map + confidence
    ATTENTION = "attention"  # (heads, queries, keys), rows sum to 1
    STATS = "stats"  # flat dict of scalars
    SERIES = "series"  # 1-D array
    SCALAR = "scalar"
    TEXT = "text"
    UNKNOWN = "unknown"

    ALL = (
        IMAGE, MASK, DEPTH, HEATMAP, PROMPTS, POINT_CLOUD, FEATURE_MAP, ATTENTION, STATS, SERIES, SCALAR, TEXT, UNKNOWN,
        LOGITS,
    )


def epoch_dir_name(epoch: int) -> str:
    return f"epoch_{int(epoch)}"


def parse_epoch_dir(name: str) -> int | None:
    """The epoch number of a folder named ``epoch_N``, else None."""
    match = _EPOCH_RE.match(name)
    return int(match.group(1)) if match else None


def step_dir_name(step: int) -> str:
    """Folder of training snapshot ``step`` inside ``RUN/train/``."""
    return f"step_{int(step)}"


def parse_step_dir(name: str) -> int | None:
    """The step of a folder named ``step_N``, else None."""
    match = _STEP_RE.match(name)
    return int(match.group(1)) if match else None


def page_name(page_idx: int, rank: int | None = None) -> str:
    """File name of page ``page_idx``; rank-sharded when ``rank`` is given (multi-process evaluation)."""
    if rank is None:
        return f"page_{int(page_idx)}.pkl"
    return f"page_rank{int(rank)}_{int(page_idx)}.pkl"


def parse_page_name(name: str) -> tuple[int | None, int] | None:
    """``(rank or None, page_idx)`` for a page file name, else None (temp files and other files are not pages)."""
    match = _PAGE_RE.match(name)
    if not match:
        return None
    rank = match.group(1)
    return (int(rank) if rank is not None else None, int(match.group(2)))


def index_name(rank: int | None = None) -> str:
    return "index.json" if rank is None else f"index_rank{int(rank)}.json"


def is_index_name(name: str) -> bool:
    return _INDEX_RE.match(name) is not None


def _json_number(value: Any) -> Any:
    """Floats for JSON; NaN and Inf become null (JSON has no NaN), nested lists kept."""
    if isinstance(value, (list, tuple)):
        return [_json_number(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return _json_number(value.tolist())
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def scores_payload(
    aggregated: Mapping[str, Any], per_datapoint: Mapping[str, Sequence[Any]]
) -> dict[str, dict[str, Any]]:
    """The scores JSON object; checks that every per-datapoint metric has one value per datapoint."""
    lengths = {name: len(values) for name, values in per_datapoint.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"per-datapoint metrics differ in length: {lengths}")
    return {
        AGGREGATED: {str(k): _json_number(v) for k, v in aggregated.items()},
        PER_DATAPOINT: {str(k): _json_number(list(v)) for k, v in per_datapoint.items()},
    }


def write_scores(
    path: str | os.PathLike[str], aggregated: Mapping[str, Any], per_datapoint: Mapping[str, Sequence[Any]]
) -> Path:
    """Write a scores file atomically (a reader never sees half a file)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(scores_payload(aggregated, per_datapoint), allow_nan=False))
    return path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_read_umask()
"""Mode of the files we write: what ``open()`` would give (mkstemp alone would make them owner-only). Read once at
import: the umask can only be read by setting it, which must not happen while other threads create files."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def checkpoint_epochs(method: str | int, total_epochs: int) -> list[int]:
    """Epochs (0-based) whose validation is captured, by the reference ``checkpoint_method`` semantics.

    ``"all"``: every epoch; ``"latest"``: the last one; an int N: every N-th epoch (N-1, 2N-1, ...), and the last
    epoch always.
    """
    if total_epochs <= 0:
        return []
    last = total_epochs - 1
    if method == "all":
        return list(range(total_epochs))
    if method == "latest":
        return [last]
    if isinstance(method, bool) or not isinstance(method, int) or method <= 0:
        raise ValueError(f"checkpoint_method must be 'all', 'latest' or a positive int, got {method!r}")
    epochs = list(range(method - 1, total_epochs, method))
    if not epochs or epochs[-1] != last:
        epochs.append(last)
    return epochs

