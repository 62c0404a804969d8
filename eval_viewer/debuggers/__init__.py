"""Capture: debuggers that keep per-datapoint internal states during evaluation, and the paged writer behind them.

Public surface::

    BaseDebugger, ForwardDebugger     the two debugger shapes (subclass them)
    get_layer_by_name                 dotted layer names, with "did you mean" on a typo
    SequentialDebugger                runs named debuggers on each batch and writes pages + index
    WriterStats                       what SequentialDebugger.stats reports
    PromptData, SnapshotWriter        training snapshots: prompts per object, composites saved as split ``train``
                                      and sent to an experiment logger (:mod:`.snapshots`; imported on first use)

Built-in debuggers (feature maps, activation stats, layer outputs, attention, GradCAM, gradients, a datapoint
recorder) live in :mod:`eval_viewer.debuggers.builtins` and are re-exported here. Integration: :mod:`.loop` (plain
PyTorch) and :mod:`.lightning` (optional PyTorch Lightning callback). Behind them: :mod:`.layouts` (kernel rows that
are batch × windows or batch × prompts, mapped back to datapoints) and :mod:`.claims` (one writer per folder and rank).
"""

from __future__ import annotations

from typing import Any

from eval_viewer.debuggers.base import BaseDebugger, ForwardDebugger
from eval_viewer.debuggers.builtins import (
    ActivationStatsDebugger,
    AttentionDebugger,
    DatapointRecorder,
    FeatureMapDebugger,
    GradCAMDebugger,
    GradientsDebugger,
    LayerOutputDebugger,
)
from eval_viewer.debuggers.layers import get_layer_by_name
from eval_viewer.debuggers.prompts import PromptData
from eval_viewer.debuggers.sequential import SequentialDebugger
from eval_viewer.debuggers.writer import WriterStats

__all__ = [
    "BaseDebugger",
    "ForwardDebugger",
    "get_layer_by_name",
    "SequentialDebugger",
    "WriterStats",
    "ActivationStatsDebugger",
    "AttentionDebugger",
    "DatapointRecorder",
    "FeatureMapDebugger",
    "GradCAMDebugger",
    "GradientsDebugger",
    "LayerOutputDebugger",
    "PromptData",
    "SnapshotWriter",  # noqa: F822 (module __getattr__: the display's drawing code loads only when used)
]


def __getattr__(name: str) -> Any:
    if name == "SnapshotWriter":
        from eval_viewer.debuggers.snapshots import SnapshotWriter

        return SnapshotWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
