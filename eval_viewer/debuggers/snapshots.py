"""Training snapshots: every N steps, a composite of input, ground truth, prompts and predictions, saved as a pass of
its own and forwarded to the experiment logger, without ever holding up or failing the training step.

Why a pass: a snapshot is written in the page format of a validation pass (``RUN/train/step_N/debugger/page_0.pkl``
+ ``index.json``, ``RUN/train/step_N/training_scores.json``), so the viewer lists it as split ``train`` keyed by step
and everything that reads passes (the app, its Training tab, the notebook API, the export) reads snapshots unchanged.
Each datapoint holds a datapoint record (the first kept frame's image, prompts, ground truth and predictions, small)
and ``snapshot.composite``, the drawn picture (uint8 RGB, :mod:`eval_viewer.display.composite`); a clip also keeps its
kept frames. A PNG of each composite lies beside the pages (``RUN/train/step_N/snapshot_{idx}.png``) for people
browsing the folder. The scores file holds ``iou`` per datapoint (when ground truth and predictions are given; 1 when
both are empty) and any per-datapoint values the caller passes (``scores={"loss": ...}``).

Why a thread: the step only slices the kept datapoints and frames, shrinks them on their device to ``max_side`` and
copies them to the CPU; drawing, encoding, writing (atomic: temp file, fsync, rename, as every page) and logging happen
on a background thread. The queue holds ``queue_size`` snapshots; when it is full the new snapshot is dropped and
counted (one warning), never waited for. A logger that fails, or has no known image method, gets one warning and the
composites are still saved.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from eval_viewer import log_format as lf
from eval_viewer.debuggers.files import atomic_dump
from eval_viewer.debuggers.prompts import PromptData
from eval_viewer.display.composite import Activation, clip_frames, composite, mask_layers
from eval_viewer.display.encode import png_bytes
from eval_viewer.display.images import image_to_rgb

__all__ = ["SnapshotWriter", "SnapshotStats", "forward_image", "RECORD", "SNAPSHOT"]

logger = logging.getLogger(__name__)

RECORD = "record"
"""Debugger name of each snapshot datapoint's record (inputs, labels, outputs, meta_info)."""
SNAPSHOT = lf.SNAPSHOT_DEBUGGER
"""Debugger name of the composite (item ``composite``) and the prompts and kept frames."""
_STOP = object()
_CHANNELS = (1, 3, 4)


@dataclass(frozen=True)
class SnapshotStats:
    queued: int
    written: int
    dropped: int
    """Snapshots not taken because ``queue_size`` were still waiting (the step never waits)."""
    failed: int
    """Snapshots that could not be drawn or written (each logged; the first as a warning)."""
    logged: int
    """Composites handed to the logger."""
    log_failures: int


@dataclass(frozen=True)
class _Job:
    step: int
    image: np.ndarray
    """``(n, [F,] ...)`` kept datapoints (and frames), shrunk."""
    input_hw: tuple[int, int]
    """Height and width of the input before shrinking: prompts are in these pixels."""
    clip: bool
    frames: tuple[int, ...]
    gt: np.ndarray | None
    pred: np.ndarray | None
    prompts: tuple[tuple[PromptData, ...], ...]
    samples: tuple[int | None, ...]
    scores: Mapping[str, tuple[float, ...]]


def _image_channels_last(shape: Sequence[int]) -> bool:
    return shape[-1] in _CHANNELS and shape[-3] not in _CHANNELS


def _shrink(value: Any, max_side: int, channels_last: bool = False, area: bool = False) -> np.ndarray:
    """A private CPU numpy copy of ``value`` with its two spatial axes at most ``max_side`` (``area``: mean over each
    output pixel's area, for images; else the nearest input pixel, exact for masks and logits and far cheaper),
    shrunk where it lies (on the GPU, before the copy) so little crosses to the host."""
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    t = t.detach()
    if channels_last:
        t = t.movedim(-1, -3)
    h, w = int(t.shape[-2]), int(t.shape[-1])
    scale = max(h, w) / max_side
    if scale > 1:
        size = (max(1, round(h / scale)), max(1, round(w / scale)))
        flat = t.reshape(-1, 1, h, w)
        if area and t.is_floating_point():
            flat = F.adaptive_avg_pool2d(flat.float(), size)
        elif h % size[0] == 0 and w % size[1] == 0:  # a whole factor: a strided view, copied small below
            ky, kx = h // size[0], w // size[1]
            flat = flat[:, :, ky // 2::ky, kx // 2::kx]
        else:
            rows = ((torch.arange(size[0], device=t.device) + 0.5) * h / size[0]).long().clamp(max=h - 1)
            cols = ((torch.arange(size[1], device=t.device) + 0.5) * w / size[1]).long().clamp(max=w - 1)
            flat = flat.index_select(2, rows).index_select(3, cols)
        t = flat.reshape(*t.shape[:-2], *size)
    if channels_last:
        t = t.movedim(-3, -1)
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.to("cpu", copy=True).numpy()


def _select(value: Any, n: int, frames: Sequence[int] | None) -> Any:
    """The first ``n`` datapoints (and the kept ``frames`` of a clip): a view or small gather on the value's device."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        value = np.asarray(value)
    value = value[:n]
    if frames is not None:
        value = value[:, list(frames)]
    return value


def _prompt(value: Any) -> PromptData:
    if isinstance(value, PromptData):
        return value
    if isinstance(value, Mapping):
        return PromptData.from_dict(value)
    raise TypeError(f"a prompt must be a PromptData or its dict, got {type(value).__name__}")


def _iou(gt: np.ndarray, pred: np.ndarray, activation: Activation, threshold: float, clip: bool) -> float:
    """Mean IoU over the objects (or classes) of every kept frame; 1.0 when truth and prediction are both empty."""
    values: list[float] = []
    for t in range(len(gt)) if clip else [None]:
        truth = dict(mask_layers(gt if t is None else gt[t], activation, threshold=threshold))
        guess = dict(mask_layers(pred if t is None else pred[t], activation, threshold=threshold, prediction=True))
        for key in sorted(set(truth) | set(guess)):
            a, b = truth.get(key), guess.get(key)
            if a is not None and b is not None and a.shape != b.shape:
                raise ValueError(f"ground truth {a.shape} and prediction {b.shape} masks differ in size")
            inter = int(np.count_nonzero(a & b)) if a is not None and b is not None else 0
            union = int(np.count_nonzero(a if b is None else b if a is None else a | b))
            if union:
                values.append(inter / union)
    return float(np.mean(values)) if values else 1.0


def forward_image(target: Any, tag: str, rgb: np.ndarray, step: int) -> str:
    """Hand ``rgb`` (H, W, 3 uint8) to an experiment logger by the first known method it has; the method's name.

    Tried in order: TensorBoard's ``add_image(tag, img, global_step, dataformats="HWC")`` (``SummaryWriter``,
    tensorboardX), the same on ``.experiment`` (Lightning's ``TensorBoardLogger``), then ``log_image(key=, images=[...],
    step=)`` (Lightning's ``WandbLogger`` and W&B-style loggers). Raises ``AttributeError`` when it has none of
    them; whatever the method raises propagates (the writer turns both into one warning).
    """
    if callable(getattr(target, "add_image", None)):
        target.add_image(tag, rgb, step, dataformats="HWC")
        return "add_image"
    experiment = getattr(target, "experiment", None)
    if callable(getattr(experiment, "add_image", None)):
        experiment.add_image(tag, rgb, step, dataformats="HWC")
        return "experiment.add_image"
    if callable(getattr(target, "log_image", None)):
        target.log_image(key=tag, images=[rgb], step=step)
        return "log_image"
    raise AttributeError(f"{type(target).__name__} has none of add_image, experiment.add_image, log_image")


class SnapshotWriter:
    """Saves (and logs) training composites every ``every_n_steps`` steps under ``run_dir``.

    Call it from the training step: ``writer(step, image, gt=..., pred=..., prompts=...)`` (it returns at once when
    the step is not due, so it can be called every step; :meth:`due` tells before preparing prompts). ``image`` is a
    batch ``(B, C, H, W)`` / ``(B, H, W, C)``, or clips ``(B, T, C, H, W)`` (``clip=True`` for other layouts);
    ``gt``/``pred``: per-object masks/logits ``(B, [T,] N, H, W)`` (``activation="sigmoid"``) or class maps
    ``(B, [T,] H, W)`` and per-class logits ``(B, [T,] C, H, W)`` (``"argmax"``); ``prompts``: one sequence of
    :class:`PromptData` per datapoint, in input pixels. At most ``max_videos`` datapoints and, of a clip, every
    ``frame_stride``-th frame up to ``max_frames`` are kept, at most ``max_side`` pixels a side. ``indices``: the
    datapoints' dataset indices (shown as ``sample``); ``scores``: per-datapoint values to save with the ``iou``.

    ``min_side``: smaller inputs are enlarged (nearest) to about this many pixels a side in the composite, so its
    markers stay readable; the composite is kept raw in the page (for a 48 px input the default triples its bytes:
    pass the input size to keep small inputs small).
    ``class_names``: names of the class ids (``argmax``), written beside each step's pages for the viewer.
    ``logger``: a TensorBoard ``SummaryWriter``, a Lightning logger or anything with ``log_image`` (see
    :func:`forward_image`); each composite goes to it as ``{tag}/{i}`` at the step. Only global rank 0 writes under
    ``torch.distributed``. :meth:`close` (or ``with``) waits for what is queued.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        every_n_steps: int = 500,
        logger: Any = None,
        queue_size: int = 4,
        *,
        activation: Activation = "sigmoid",
        threshold: float = 0.5,
        max_videos: int = 4,
        frame_stride: int = 1,
        max_frames: int = 8,
        max_side: int = 256,
        min_side: int = 128,
        tag: str = "snapshots",
        class_names: Sequence[str] | None = None,
    ) -> None:
        if every_n_steps < 1 or queue_size < 1 or max_videos < 1 or max_side < 8:
            raise ValueError("every_n_steps, queue_size and max_videos must be >= 1 and max_side >= 8, got "
                             f"{every_n_steps}, {queue_size}, {max_videos}, {max_side}")
        if activation not in ("sigmoid", "argmax", "none"):
            raise ValueError(f"activation must be 'sigmoid', 'argmax' or 'none', got {activation!r}")
        clip_frames(1, frame_stride, max_frames)  # checks them
        self.run_dir = Path(run_dir)
        self.every_n_steps = int(every_n_steps)
        self.logger = logger
        self.activation: Activation = activation
        self.threshold = float(threshold)
        self.max_videos = int(max_videos)
        self.frame_stride = int(frame_stride)
        self.max_frames = int(max_frames)
        self.max_side = int(max_side)
        self.min_side = max(1, int(min_side))
        self.tag = tag
        self.class_names = [str(c) for c in class_names] if class_names is not None else None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=int(queue_size))
        self._lock = threading.Lock()
        self._counts = {"queued": 0, "written": 0, "dropped": 0, "failed": 0, "logged": 0, "log_failures": 0}
        self._warned: set[str] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="eval-viewer-snapshots", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- training-step side

    @property
    def stats(self) -> SnapshotStats:
        with self._lock:
            return SnapshotStats(**self._counts)

    def due(self, step: int) -> bool:
        """Whether ``step`` is a snapshot step (every ``every_n_steps``-th, from 0) on a writing process."""
        if int(step) % self.every_n_steps != 0 or self._closed:
            return False
        dist = torch.distributed
        return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)

    def __call__(
        self,
        step: int,
        image: Any,
        *,
        gt: Any = None,
        pred: Any = None,
        prompts: Sequence[Sequence[PromptData | Mapping[str, Any]]] | None = None,
        indices: Any = None,
        scores: Mapping[str, Any] | None = None,
        clip: bool | None = None,
        force: bool = False,
    ) -> bool:
        """Queue the snapshot of ``step`` when it is due (or ``force``); True when queued, False when not due or
        dropped because the queue is full. Never waits, never raises for the logger."""
        if not (force or self.due(step)):
            return False
        if self._queue.full():  # the cheap check first: a dropped snapshot costs no copy
            self._drop(step)
            return False
        job = self._job(int(step), image, gt, pred, prompts, indices, scores, clip)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._drop(step)
            return False
        with self._lock:
            self._counts["queued"] += 1
        return True

    def _drop(self, step: int) -> None:
        with self._lock:
            self._counts["dropped"] += 1
            dropped = self._counts["dropped"]
        if dropped == 1:
            logger.warning("Training snapshot of step %d dropped: %d snapshots are still being written (the step "
                           "never waits; SnapshotWriter.stats counts the drops)", step, self._queue.maxsize)

    def _job(self, step: int, image: Any, gt: Any, pred: Any, prompts: Any, indices: Any, scores: Any,
             clip: bool | None) -> _Job:
        if not hasattr(image, "shape"):
            raise TypeError(f"image must be a tensor or an array, got {type(image).__name__}")
        shape = tuple(image.shape)
        is_clip = len(shape) == 5 if clip is None else bool(clip)
        if len(shape) < (4 if is_clip else 3):
            raise ValueError(f"image must be a batch (B, C, H, W) or clips (B, T, C, H, W), got shape {shape}")
        n = min(shape[0], self.max_videos)
        frames = tuple(clip_frames(shape[1], self.frame_stride, self.max_frames)) if is_clip else (0,)
        keep = frames if is_clip else None
        channels_last = _image_channels_last(shape)
        height, width = (shape[-3], shape[-2]) if channels_last else (shape[-2], shape[-1])
        per_datapoint: tuple[tuple[PromptData, ...], ...] = ()
        if prompts is not None:
            if len(prompts) < n:
                raise ValueError(f"prompts: one sequence per datapoint, got {len(prompts)} for a batch of {n}")
            per_datapoint = tuple(tuple(_prompt(p) for p in prompts[i]) for i in range(n))
        samples: tuple[int | None, ...] = (None,) * n
        if indices is not None:
            samples = tuple(int(i) for i in _shrink_free(indices)[:n])
        return _Job(
            step=step,
            image=_shrink(_select(image, n, keep), self.max_side, channels_last, area=True),
            input_hw=(int(height), int(width)),
            clip=is_clip,
            frames=frames,
            gt=None if gt is None else _shrink(_select(gt, n, keep), self.max_side),
            pred=None if pred is None else _shrink(_select(pred, n, keep), self.max_side),
            prompts=per_datapoint,
            samples=samples,
            scores={str(k): tuple(float(v) for v in _shrink_free(values)[:n]) for k, values in (scores or {}).items()},
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is written and logged; False on timeout."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        """Write what is queued, then stop the thread (later calls are not due)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- writer thread

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                self._write(job)
            except Exception as exc:  # noqa: BLE001 - a snapshot must never take training down
                with self._lock:
                    self._counts["failed"] += 1
                    first = self._counts["failed"] == 1
                (logger.warning if first else logger.debug)(
                    "Training snapshot of step %s could not be written: %s", getattr(job, "step", "?"), exc,
                    exc_info=first)
            finally:
                self._queue.task_done()

    def _write(self, job: _Job) -> None:
        folder = self.run_dir / lf.TRAIN_DIR / lf.step_dir_name(job.step)
        debug_dir = folder / lf.DEBUGGER_DIR
        debug_dir.mkdir(parents=True, exist_ok=True)
        page: dict[int, dict[str, Any]] = {}
        meta: dict[str, dict[str, Any]] = {}
        pictures: list[np.ndarray] = []
        ious: list[float] = []
        for i in range(len(job.image)):
            entry, picture = self._datapoint(job, i)
            page[i] = entry
            pictures.append(picture)
            meta[str(i)] = dict(entry[RECORD]["meta_info"])
            if job.gt is not None and job.pred is not None:
                ious.append(_iou(job.gt[i], job.pred[i], self.activation, self.threshold, job.clip))
        name = lf.page_name(0)
        size = atomic_dump(debug_dir / name, page)
        if self.class_names is not None:  # the viewer's sidecar: names in mask legends and beside class ids
            lf.atomic_write_text(debug_dir / lf.VIEWER_FILE, json.dumps({lf.VIEWER_CLASS_NAMES: self.class_names}))
        lf.atomic_write_text(debug_dir / lf.index_name(), json.dumps({
            lf.INDEX_VERSION: lf.FORMAT_VERSION,
            lf.INDEX_RANK: None,
            lf.INDEX_PAGES: {name: {"indices": list(page), "bytes": size}},
            lf.INDEX_DEBUGGERS: self._debuggers(job),
            lf.INDEX_META: meta,
        }, allow_nan=False))
        for path in debug_dir.iterdir():  # pages of an earlier write of this step (a resumed run) must not mix in
            if lf.parse_page_name(path.name) is not None and path.name != name:
                path.unlink(missing_ok=True)
        for i, picture in enumerate(pictures):
            lf.atomic_write_bytes(folder / f"snapshot_{i}.png", png_bytes(picture))
        per_datapoint = {k: list(v) for k, v in job.scores.items()}
        if ious:
            per_datapoint["iou"] = ious
        if per_datapoint:
            aggregated = {k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
                          for k, v in per_datapoint.items()}
            lf.write_scores(folder / lf.TRAINING_SCORES, aggregated, per_datapoint)
        with self._lock:
            self._counts["written"] += 1
        if self.logger is not None:
            for i, picture in enumerate(pictures):
                self._log(f"{self.tag}/{i}", picture, job.step)

    def _datapoint(self, job: _Job, i: int) -> tuple[dict[str, Any], np.ndarray]:
        """One datapoint's page entry and its composite."""
        frames = [image_to_rgb(f) for f in job.image[i]] if job.clip else [image_to_rgb(job.image[i])]
        h, w = frames[0].shape[:2]
        sx, sy = w / job.input_hw[1], h / job.input_hw[0]
        prompts = tuple(p.scaled(sx, sy, (h, w)) for p in job.prompts[i]) if job.prompts else ()
        local = [p for p in prompts if p.frame is None or p.frame in job.frames] if job.clip else list(prompts)
        gt = None if job.gt is None else job.gt[i]
        pred = None if job.pred is None else job.pred[i]
        picture = composite(np.stack(frames) if job.clip else frames[0], gt=gt, pred=pred,
                            prompts=local, activation=self.activation,
                            threshold=self.threshold, clip=job.clip, max_frames=len(frames), max_side=self.max_side,
                            min_side=self.min_side, frame_numbers=job.frames).rgb
        first = (lambda a: a[0]) if job.clip else (lambda a: a)
        inputs: dict[str, Any] = {"image": frames[0]}
        if prompts:
            inputs["prompts"] = _prompt_arrays([p for p in prompts if p.frame in (None, job.frames[0])])
        meta = {"step": job.step, "sample": job.samples[i], "objects": _objects(gt, pred, prompts, self.activation),
                "frames": ",".join(map(str, job.frames)) if job.clip else None}
        record: dict[str, Any] = {"inputs": inputs, "meta_info": {k: v for k, v in meta.items() if v is not None}}
        if gt is not None:
            record["labels"] = {"masks": _small_masks(first(gt))}
        if pred is not None:
            record["outputs"] = {"masks": _activated(first(pred), self.activation, self.threshold)}
        snapshot: dict[str, Any] = {lf.SNAPSHOT_COMPOSITE: picture, "prompts": [p.to_dict() for p in prompts]}
        if job.clip:
            snapshot.update(frames=np.stack(frames), frame_numbers=np.asarray(job.frames, dtype=np.int64))
            if gt is not None:
                snapshot["gt_frames"] = _small_masks(gt)
            if pred is not None:
                snapshot["pred_frames"] = np.stack([_activated(p, self.activation, self.threshold) for p in pred])
        return {RECORD: record, SNAPSHOT: snapshot}, picture

    def _debuggers(self, job: _Job) -> dict[str, Any]:
        cls = f"{type(self).__module__}.{type(self).__qualname__}"
        kinds = {"inputs.image": lf.Kind.IMAGE, "inputs.prompts": lf.Kind.PROMPTS, "labels.masks": lf.Kind.MASK,
                 "outputs.masks": lf.Kind.MASK, "meta_info.step": lf.Kind.SCALAR}
        return {RECORD: {"class": cls, lf.KINDS_KEY: kinds},
                SNAPSHOT: {"class": cls, lf.KINDS_KEY: {lf.SNAPSHOT_COMPOSITE: lf.Kind.IMAGE}}}

    def _log(self, tag: str, picture: np.ndarray, step: int) -> None:
        try:
            forward_image(self.logger, tag, picture, step)
        except Exception as exc:  # noqa: BLE001 - whatever a logger raises, training goes on
            with self._lock:
                self._counts["log_failures"] += 1
            key = type(exc).__name__ if isinstance(exc, AttributeError) else "raised"
            if key not in self._warned:
                self._warned.add(key)
                logger.warning("Could not log the training snapshot to %s (%s: %s); snapshots are still saved in %s "
                               "(said once)", type(self.logger).__name__, type(exc).__name__, exc, self.run_dir)
        else:
            with self._lock:
                self._counts["logged"] += 1


def _shrink_free(values: Any) -> list[Any]:
    """Plain Python values of a small per-datapoint vector (a tensor, an array or a list)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().reshape(-1).tolist()
    return list(np.asarray(values).reshape(-1).tolist())


def _small_masks(masks: np.ndarray) -> np.ndarray:
    if masks.dtype == bool or (masks.dtype.kind in "iu" and masks.size and 0 <= masks.min() and masks.max() < 256):
        return masks.astype(np.uint8)
    return masks


def _activated(pred: np.ndarray, activation: Activation, threshold: float) -> np.ndarray:
    """Predicted masks as saved: a uint8 stack of objects (sigmoid) or a class map (argmax)."""
    layers = mask_layers(pred, activation, threshold=threshold, prediction=True)
    shape = pred.shape[-2:]
    if activation == "argmax" or (activation == "none" and pred.ndim == 2):
        out = np.zeros(shape, dtype=np.int64)
        for c, m in layers:
            out[m] = c
        return _small_masks(out)
    count = pred.shape[0] if pred.ndim == 3 else 1
    stack = np.zeros((count, *shape), dtype=np.uint8)
    for c, m in layers:
        stack[c - 1] = m
    return stack


def _prompt_arrays(prompts: Sequence[PromptData]) -> dict[str, Any]:
    """Points and boxes of every object as the prompt renderer reads them (:mod:`eval_viewer.display.points`)."""
    out: dict[str, Any] = {}
    points = [p for p in prompts if p.type == "point"]
    if points:
        out["points"] = np.concatenate([p.points for p in points])  # type: ignore[misc]
        out["labels"] = np.concatenate([p.labels for p in points])  # type: ignore[misc]
        out["point_objects"] = np.concatenate([np.full(len(p.points), p.object_id) for p in points])  # type: ignore
    boxes = [p for p in prompts if p.type == "box"]
    if boxes:
        out["boxes"] = np.stack([p.box for p in boxes])  # type: ignore[misc]
        out["box_objects"] = np.asarray([p.object_id for p in boxes])
    masks = [p for p in prompts if p.type == "mask"]
    if masks:
        out["mask"] = np.any(np.stack([p.mask for p in masks]), axis=0).astype(np.uint8)  # type: ignore[misc]
    return out


def _objects(gt: Any, pred: Any, prompts: Sequence[PromptData], activation: Activation) -> int | None:
    """How many objects the datapoint has (per-object stacks or prompts); None for class maps."""
    if activation == "argmax":
        return None
    counts = [p.object_id + 1 for p in prompts]
    for masks in (gt, pred):
        if masks is not None and masks.ndim >= 3:
            counts.append(int(masks.shape[-3]))
    return max(counts) if counts else None
