"""The two debugger shapes users already know: one that sees a whole datapoint, one fed by a forward hook.

A debugger returns plain data (dicts, lists, numbers, strings, numpy arrays or torch tensors). The
:class:`~eval_viewer.debuggers.sequential.SequentialDebugger` splits a batch into datapoints, moves tensors off the
device and writes pages; a debugger only says what to keep, and, through :meth:`BaseDebugger.kinds`, what each kept
value *means* (an image, a feature map, an attention map...) so the viewer draws it without guessing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

__all__ = ["BaseDebugger", "ForwardDebugger"]


class BaseDebugger(ABC):
    """A debugger that works on the whole datapoint after the forward pass (GradCAM, a datapoint recorder...).

    ``datapoint`` is the eval loop's batch dict: ``{"inputs": ..., "labels": ..., "meta_info": ..., "outputs": ...}``
    where ``meta_info["idx"]`` names the datapoints of the batch. The return value holds the whole batch: every
    per-datapoint tensor with the batch dimension first, also for a batch of one (the sequential debugger splits
    along it, see :mod:`eval_viewer.debuggers.batching`); anything without it is copied to every datapoint.
    """

    @abstractmethod
    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> Any:
        raise NotImplementedError

    def kinds(self) -> dict[str, str]:
        """Semantic kind (:class:`eval_viewer.log_format.Kind`) of each dotted key path of this debugger's output.

        ``{"": kind}`` tags the output itself. Keys left out are inferred by the reader from name, dtype and shape.
        """
        return {}


class ForwardDebugger(BaseDebugger):
    """A debugger fed by a forward hook on the layer named ``layer_name`` (dotted path, e.g. ``backbone.layer4.1``).

    Subclasses implement :meth:`process_forward`; the sequential debugger calls :meth:`attach` on the layer when
    capture is enabled and removes the handles when it is disabled, so a disabled debugger costs nothing per forward.
    """

    def __init__(self, layer_name: str) -> None:
        self.layer_name = layer_name
        self.last_capture: Any = None

    def attach(self, module: torch.nn.Module) -> list[RemovableHandle]:
        """Register this debugger's hooks on ``module`` and return their handles (removed when capture stops).

        The default is one forward hook calling :meth:`forward_hook_fn`; a debugger that needs more (a pre-hook to
        switch on attention weights, say) overrides this, so the sequential debugger never needs to know.
        """
        return [module.register_forward_hook(self.forward_hook_fn)]

    def forward_hook_fn(self, module: torch.nn.Module, input: Any, output: Any) -> None:
        """The hook itself: keep what :meth:`process_forward` returns for the current batch."""
        with torch.no_grad():
            self.last_capture = self.process_forward(module, input, output)

    @abstractmethod
    def process_forward(self, module: torch.nn.Module, input: Any, output: Any) -> Any:
        """Turn one forward call of the layer (whole batch) into what to keep."""
        raise NotImplementedError

    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> Any:
        """Hand over the capture of the batch just run, and forget it (a stale capture is never returned twice)."""
        capture, self.last_capture = self.last_capture, None
        return capture
