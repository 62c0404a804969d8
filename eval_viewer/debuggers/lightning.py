"""PyTorch Lightning integration (optional extra: ``pip install 'eval-viewer[lightning]'``).

``EvalViewerCallback`` does in a Lightning ``Trainer`` what :mod:`eval_viewer.debuggers.loop` does in a plain loop:
on the capture epochs (``checkpoint_epochs(checkpoint_method, trainer.max_epochs)``) it enables the
SequentialDebugger for the validation pass, feeds it every validation batch with the step's outputs, writes
``RUN/epoch_N/validation_scores.json`` every epoch and saves the pages into ``RUN/epoch_N/debugger``.

Lightning is imported only when the callback is first used, so this module imports without it; using the callback
without Lightning raises an ImportError that says what to install. The hook logic lives in :class:`EvalViewerHooks`,
a plain class (testable without Lightning), which the callback class combines with Lightning's ``Callback``.

Training snapshots: with ``snapshots=SnapshotWriter(...)`` (:mod:`eval_viewer.debuggers.snapshots`) the callback also
hands every due training step's batch and outputs to the writer (at ``trainer.global_step``, once per step under
gradient accumulation, on global rank 0), and forwards the composites to ``trainer.logger`` when the writer was
given no logger of its own. ``snapshot_fn(batch, outputs)`` picks the writer's arguments; the default takes
``image=batch["inputs"]``, ``gt=batch["labels"]`` (each, or the one tensor of such a dict), ``pred=outputs["outputs"]``
(when ``training_step`` returns a dict holding them), ``prompts=batch["prompts"]`` and ``indices`` from
``batch["meta_info"]["idx"]``. ``metrics_fn=None`` turns the validation capture off (snapshots only).

Requirements: validation batches are dicts ``{"inputs", "labels", "meta_info": {"idx"}}``; ``validation_step``
returns the model outputs, or a dict holding them under ``"outputs"``. Scores are not gathered across processes:
only global rank 0 writes them, so validate on one process (or use a SequentialDebugger with ``rank=`` for pages).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eval_viewer import log_format as lf
from eval_viewer.debuggers.loop import AggregateFn, MetricsFn, ScoreCollector, mean_aggregate

__all__ = [  # noqa: F822 (EvalViewerCallback: module __getattr__)
    "EvalViewerHooks", "EvalViewerCallback", "lightning_callback_class", "default_snapshot_fn",
]

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "EvalViewerCallback needs PyTorch Lightning, an optional extra of eval-viewer: pip install 'eval-viewer[lightning]' "
    "(or pip install lightning). Without Lightning, use eval_viewer.debuggers.loop instead."
)


SnapshotFn = Callable[[Any, Any], Mapping[str, Any]]


def _only_tensor(value: Any) -> Any:
    if isinstance(value, Mapping):
        tensors = [v for v in value.values() if hasattr(v, "shape")]
        return tensors[0] if len(tensors) == 1 else None
    return value


def default_snapshot_fn(batch: Any, outputs: Any) -> dict[str, Any]:
    """The snapshot writer's arguments from a dict batch and ``training_step``'s return value (see the module)."""
    meta = batch.get("meta_info") if isinstance(batch, Mapping) else None
    return {
        "image": _only_tensor(batch["inputs"]),
        "gt": _only_tensor(batch.get("labels")),
        "pred": outputs.get("outputs") if isinstance(outputs, Mapping) else None,
        "prompts": batch.get("prompts"),
        "indices": meta.get("idx") if isinstance(meta, Mapping) else None,
    }


class EvalViewerHooks:
    """The callback's logic on duck-typed ``trainer`` objects (``current_epoch``, ``max_epochs``, ``sanity_checking``,
    ``is_global_zero``, ``log_dir`` / ``default_root_dir``)."""

    def __init__(
        self,
        metrics_fn: MetricsFn | None = None,
        debugger: Any = None,
        run_dir: str | Path | None = None,
        checkpoint_method: str | int = "latest",
        aggregate_fn: AggregateFn = mean_aggregate,
        snapshots: Any = None,
        snapshot_fn: SnapshotFn = default_snapshot_fn,
    ) -> None:
        self.metrics_fn = metrics_fn
        self.snapshots = snapshots
        self.snapshot_fn = snapshot_fn
        self._last_snapshot: int | None = None
        self._own_logger = snapshots is not None and snapshots.logger is not None
        self.debugger = debugger
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_method = checkpoint_method
        self.aggregate_fn = aggregate_fn
        self._scores: ScoreCollector | None = None
        self._capturing = False

    def _epoch_dir(self, trainer: Any) -> Path:
        root = self.run_dir or Path(getattr(trainer, "log_dir", None) or trainer.default_root_dir)
        return root / lf.epoch_dir_name(trainer.current_epoch)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.snapshots is not None and not self._own_logger:
            self.snapshots.logger = getattr(trainer, "logger", None)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.snapshots is None or not getattr(trainer, "is_global_zero", True):
            return
        step = int(trainer.global_step)
        if step == self._last_snapshot or not self.snapshots.due(step):
            return
        self._last_snapshot = step
        self.snapshots(step, **self.snapshot_fn(batch, outputs))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.snapshots is not None:
            self.snapshots.flush(timeout=60)

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if getattr(trainer, "sanity_checking", False) or self.metrics_fn is None:
            return
        self._scores = ScoreCollector()
        capture_epochs = lf.checkpoint_epochs(self.checkpoint_method, int(trainer.max_epochs))
        self._capturing = self.debugger is not None and trainer.current_epoch in capture_epochs
        if self._capturing:
            self.debugger.start_epoch(self._epoch_dir(trainer) / lf.DEBUGGER_DIR)

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._scores is None:
            return
        predictions = outputs["outputs"] if isinstance(outputs, Mapping) and "outputs" in outputs else outputs
        datapoint = {**batch, "outputs": predictions}
        if self._capturing:
            self.debugger(datapoint, pl_module)
        metrics_fn = self.metrics_fn
        assert metrics_fn is not None  # an epoch collects scores only with one
        self._scores.add(batch["meta_info"]["idx"], metrics_fn(predictions, batch.get("labels")))

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._scores is None:
            return
        epoch_dir = self._epoch_dir(trainer)
        try:
            if getattr(trainer, "is_global_zero", True):
                self._scores.write(epoch_dir / lf.VALIDATION_SCORES, aggregate_fn=self.aggregate_fn)
            if self._capturing:
                self.debugger.save_all(epoch_dir / lf.DEBUGGER_DIR)
        finally:
            if self._capturing:
                self.debugger.enabled = False
            self._scores, self._capturing = None, False


def lightning_callback_class() -> type:
    """``EvalViewerCallback``: :class:`EvalViewerHooks` + Lightning's ``Callback``; ImportError without Lightning."""
    try:
        from lightning.pytorch import Callback  # noqa: PLC0415
    except ImportError:
        try:
            from pytorch_lightning import Callback  # type: ignore[no-redef]  # noqa: PLC0415
        except ImportError:
            raise ImportError(_INSTALL_HINT) from None
    return type("EvalViewerCallback", (EvalViewerHooks, Callback), {"__module__": __name__, "__doc__": __doc__})


def __getattr__(name: str) -> Any:
    """``from eval_viewer.debuggers.lightning import EvalViewerCallback`` imports Lightning only then."""
    if name == "EvalViewerCallback":
        cls = lightning_callback_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
