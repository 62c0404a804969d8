"""PyTorch Lightning integration (optional extra: ``pip install 'eval-viewer[lightning]'``).

``EvalViewerCallback`` does in a Lightning ``Trainer`` what :mod:`eval_viewer.debuggers.loop` does in a plain loop:
on the capture epochs (``checkpoint_epochs(checkpoint_method, trainer.max_epochs)``) it enables the
SequentialDebugger for the validation pass, feeds it every validation batch with the step's outputs, writes
``RUN/epoch_N/validation_scores.json`` every epoch and saves the pages into ``RUN/epoch_N/debugger``.

Lightning is imported only when the callback is first used, so this module imports without it; using the callback
without Lightning raises an ImportError that says what to install. The hook logic lives in :class:`EvalViewerHooks`,
a plain class (testable without Lightning), which the callback class combines with Lightning's ``Callback``.

Requirements: validation batches are dicts ``{"inputs", "labels", "meta_info": {"idx"}}``; ``validation_step``
returns the model outputs, or a dict holding them under ``"outputs"``. Scores are not gathered across processes:
only global rank 0 writes them, so validate on one process (or use a SequentialDebugger with ``rank=`` for pages).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eval_viewer import log_format as lf
from eval_viewer.debuggers.loop import AggregateFn, MetricsFn, ScoreCollector, mean_aggregate

__all__ = ["EvalViewerHooks", "EvalViewerCallback", "lightning_callback_class"]  # noqa: F822 (module __getattr__)

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "EvalViewerCallback needs PyTorch Lightning, an optional extra of eval-viewer: pip install 'eval-viewer[lightning]' "
    "(or pip install lightning). Without Lightning, use eval_viewer.debuggers.loop instead."
)


class EvalViewerHooks:
    """The callback's logic on duck-typed ``trainer`` objects (``current_epoch``, ``max_epochs``, ``sanity_checking``,
    ``is_global_zero``, ``log_dir`` / ``default_root_dir``)."""

    def __init__(
        self,
        metrics_fn: MetricsFn,
        debugger: Any = None,
        run_dir: str | Path | None = None,
        checkpoint_method: str | int = "latest",
        aggregate_fn: AggregateFn = mean_aggregate,
    ) -> None:
        self.metrics_fn = metrics_fn
        self.debugger = debugger
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_method = checkpoint_method
        self.aggregate_fn = aggregate_fn
        self._scores: ScoreCollector | None = None
        self._capturing = False

    def _epoch_dir(self, trainer: Any) -> Path:
        root = self.run_dir or Path(getattr(trainer, "log_dir", None) or trainer.default_root_dir)
        return root / lf.epoch_dir_name(trainer.current_epoch)

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if getattr(trainer, "sanity_checking", False):
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
        self._scores.add(batch["meta_info"]["idx"], self.metrics_fn(predictions, batch.get("labels")))

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
