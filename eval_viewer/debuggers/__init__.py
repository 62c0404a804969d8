"""Capture: debuggers that keep per-datapoint internal states during evaluation, and the paged writer behind them.

Public surface::

    BaseDebugger, ForwardDebugger     the two debugger shapes (subclass them)
    get_layer_by_name                 dotted layer names, with "did you mean" on a typo
    SequentialDebugger                runs named debuggers on each batch and writes pages + index
    WriterStats                       what SequentialDebugger.stats reports

Built-in debuggers live in :mod:`eval_viewer.debuggers.builtins`; their exports are added to the block below.
"""

from __future__ import annotations

from eval_viewer.debuggers.base import BaseDebugger, ForwardDebugger
from eval_viewer.debuggers.layers import get_layer_by_name
from eval_viewer.debuggers.sequential import SequentialDebugger
from eval_viewer.debuggers.writer import WriterStats

__all__ = [
    "BaseDebugger",
    "ForwardDebugger",
    "get_layer_by_name",
    "SequentialDebugger",
    "WriterStats",
]

# Built-in debuggers: import them here and extend __all__, e.g.
#   from eval_viewer.debuggers.builtins import FeatureMapDebugger
#   __all__ += ["FeatureMapDebugger"]
