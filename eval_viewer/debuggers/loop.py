"""A short plain-PyTorch loop that writes what the viewer reads: scores per datapoint and, on capture epochs, pages.

Three layers, use the one that fits your code:

* :class:`ScoreCollector` gathers per-datapoint metrics by dataset index and writes a scores file
  (:func:`eval_viewer.log_format.write_scores`): list position = datapoint index.
* :func:`evaluate` runs one pass (``model.eval()``, ``torch.no_grad()``), capturing with a
  :class:`~eval_viewer.debuggers.sequential.SequentialDebugger` when asked; :func:`validate_epoch` and
  :func:`evaluate_run` put its files where a trainer run (``RUN/epoch_N/``) or an evaluator run (``RUN/``) keeps them.
* :func:`train` is a minimal training loop around them that captures on ``checkpoint_epochs(method, epochs)``.

Batches are dicts ``{"inputs": ..., "labels": ..., "meta_info": {"idx": ...}}`` (``idx``: the datapoints' dataset
indices); the model is called as ``forward_fn(model, batch["inputs"])`` (default ``model(inputs)``).
``metrics_fn(outputs, labels)`` returns ``{metric: per-datapoint values}``: a ``(B,)`` tensor/array/list, or ``(B, C)``
for a per-class metric (the viewer expands it into ``metric[c]``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval_viewer import log_format as lf
from eval_viewer.debuggers.batching import batch_indices
from eval_viewer.errors import CaptureError

__all__ = [
    "MetricsFn",
    "ForwardFn",
    "AggregateFn",
    "EvalResult",
    "ScoreCollector",
    "mean_aggregate",
    "evaluate",
    "validate_epoch",
    "evaluate_run",
    "train",
]

logger = logging.getLogger(__name__)

MetricsFn = Callable[[Any, Any], Mapping[str, Any]]
ForwardFn = Callable[[torch.nn.Module, Any], Any]
AggregateFn = Callable[[Mapping[str, Sequence[Any]]], Mapping[str, Any]]


def _default_forward(model: torch.nn.Module, inputs: Any) -> Any:
    return model(inputs)


def _values(value: Any, batch: int, name: str) -> list[Any]:
    """Per-datapoint values as Python floats or lists of floats, checked against the batch size."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != batch:
        raise CaptureError(f"metric {name!r} must give one value per datapoint ({batch}), got {value!r:.80}")
    return list(value)


def mean_aggregate(per_datapoint: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Mean over datapoints ignoring None/NaN; per class for list metrics (the scores file's ``aggregated``)."""
    aggregated: dict[str, Any] = {}
    for name, values in per_datapoint.items():
        present = [v for v in values if v is not None]
        if present and isinstance(present[0], (list, tuple)):
            arr = np.array([[np.nan if c is None else c for c in v] for v in present], dtype=float)
            aggregated[name] = [float(np.nanmean(col)) if np.isfinite(col).any() else None for col in arr.T]
        else:
            arr = np.array([np.nan if v is None else v for v in present], dtype=float)
            aggregated[name] = float(np.nanmean(arr)) if np.isfinite(arr).any() else None
    return aggregated


@dataclass
class ScoreCollector:
    """Per-datapoint metrics keyed by dataset index, written as a scores file with one slot per datapoint."""

    values: dict[str, dict[int, Any]] = field(default_factory=dict)

    def add(self, idx: Any, metrics: Mapping[str, Any]) -> None:
        indices = batch_indices(idx)
        for name, value in metrics.items():
            slot = self.values.setdefault(str(name), {})
            for i, v in zip(indices, _values(value, len(indices), str(name))):
                slot[i] = v

    def per_datapoint(self, num_datapoints: int | None = None) -> dict[str, list[Any]]:
        """``{metric: [value or None per datapoint]}``; missing datapoints are None (position = datapoint index)."""
        seen = [i for slot in self.values.values() for i in slot]
        size = num_datapoints if num_datapoints is not None else (max(seen) + 1 if seen else 0)
        return {name: [slot.get(i) for i in range(size)] for name, slot in self.values.items()}

    def write(
        self, path: str | Path, num_datapoints: int | None = None, aggregate_fn: AggregateFn = mean_aggregate
    ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        per_datapoint = self.per_datapoint(num_datapoints)
        aggregated = dict(aggregate_fn(per_datapoint))
        lf.write_scores(path, aggregated, per_datapoint)
        return aggregated, per_datapoint


@dataclass(frozen=True)
class EvalResult:
    aggregated: dict[str, Any]
    per_datapoint: dict[str, list[Any]]
    scores_path: Path | None
    pages: tuple[Path, ...] = ()


def _dataset_size(loader: Iterable[Any]) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None  # type: ignore[arg-type]
    except TypeError:
        return None


def evaluate(
    model: torch.nn.Module,
    loader: Iterable[Mapping[str, Any]],
    metrics_fn: MetricsFn,
    *,
    scores_path: str | Path | None = None,
    debugger: Any = None,
    debugger_dir: str | Path | None = None,
    forward_fn: ForwardFn | None = None,
    aggregate_fn: AggregateFn = mean_aggregate,
) -> EvalResult:
    """One evaluation pass; writes ``scores_path`` and, when ``debugger`` and ``debugger_dir`` are given, pages.

    ``debugger`` is a SequentialDebugger: capture is switched on for this pass only (``start_epoch``) and its pages
    are saved into ``debugger_dir`` (``save_all``), whose write errors are raised as :class:`CaptureError`.
    """
    forward_fn = forward_fn or _default_forward
    capture = debugger is not None and debugger_dir is not None
    was_training = model.training
    model.eval()
    collector = ScoreCollector()
    pages: list[Path] = []
    try:
        if capture:
            debugger.start_epoch(debugger_dir)
        for batch in loader:
            batch = dict(batch)
            with torch.no_grad():
                batch["outputs"] = forward_fn(model, batch["inputs"])
                if capture:
                    debugger(batch, model)
                collector.add(batch["meta_info"]["idx"], metrics_fn(batch["outputs"], batch.get("labels")))
        if capture:
            pages = debugger.save_all(debugger_dir)
    finally:
        if capture:
            debugger.enabled = False
        model.train(was_training)
    num = _dataset_size(loader)
    if scores_path is not None:
        aggregated, per_datapoint = collector.write(scores_path, num, aggregate_fn)
    else:
        per_datapoint = collector.per_datapoint(num)
        aggregated = dict(aggregate_fn(per_datapoint))
    return EvalResult(aggregated, per_datapoint, Path(scores_path) if scores_path else None, tuple(pages))


def validate_epoch(
    model: torch.nn.Module,
    loader: Iterable[Mapping[str, Any]],
    metrics_fn: MetricsFn,
    run_dir: str | Path,
    epoch: int,
    *,
    debugger: Any = None,
    capture: bool = False,
    **kwargs: Any,
) -> EvalResult:
    """Validation of a trainer run: ``RUN/epoch_N/validation_scores.json`` and, when ``capture``, ``epoch_N/debugger``."""
    epoch_dir = Path(run_dir) / lf.epoch_dir_name(epoch)
    return evaluate(
        model, loader, metrics_fn, scores_path=epoch_dir / lf.VALIDATION_SCORES,
        debugger=debugger if capture else None, debugger_dir=epoch_dir / lf.DEBUGGER_DIR if capture else None,
        **kwargs,
    )


def evaluate_run(
    model: torch.nn.Module,
    loader: Iterable[Mapping[str, Any]],
    metrics_fn: MetricsFn,
    run_dir: str | Path,
    *,
    debugger: Any = None,
    **kwargs: Any,
) -> EvalResult:
    """An evaluator run: ``RUN/evaluation_scores.json`` and, with a debugger, ``RUN/debugger``."""
    run_dir = Path(run_dir)
    return evaluate(
        model, loader, metrics_fn, scores_path=run_dir / lf.EVALUATION_SCORES, debugger=debugger,
        debugger_dir=run_dir / lf.DEBUGGER_DIR if debugger is not None else None, **kwargs,
    )


def train(
    model: torch.nn.Module,
    train_loader: Iterable[Mapping[str, Any]],
    val_loader: Iterable[Mapping[str, Any]],
    *,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    metrics_fn: MetricsFn,
    run_dir: str | Path,
    epochs: int,
    debugger: Any = None,
    checkpoint_method: str | int = "latest",
    forward_fn: ForwardFn | None = None,
    scheduler: Any = None,
) -> list[EvalResult]:
    """Train for ``epochs`` and validate after each; capture on ``checkpoint_epochs(checkpoint_method, epochs)``.

    ``loss_fn(outputs, labels)`` returns the scalar training loss. Returns each epoch's :class:`EvalResult`.
    """
    forward_fn = forward_fn or _default_forward
    capture_epochs = set(lf.checkpoint_epochs(checkpoint_method, epochs))
    results = []
    for epoch in range(epochs):
        model.train()
        total, batches = 0.0, 0
        for batch in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(forward_fn(model, batch["inputs"]), batch.get("labels"))
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        if scheduler is not None:
            scheduler.step()
        result = validate_epoch(
            model, val_loader, metrics_fn, run_dir, epoch, debugger=debugger, capture=epoch in capture_epochs,
            forward_fn=forward_fn,
        )
        summary = ", ".join(f"{k}={v:.4f}" for k, v in result.aggregated.items() if isinstance(v, float))
        logger.info(
            "epoch %d: train loss %.4f; %s%s", epoch, total / max(batches, 1), summary,
            f"; {len(result.pages)} debug page(s)" if result.pages else "",
        )
        if not math.isfinite(total):
            logger.warning("epoch %d: the training loss is not finite", epoch)
        results.append(result)
    return results
