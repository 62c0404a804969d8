"""The two debugger shapes users already know: one that sees a whole datapoint, one fed by a forward hook.

A debugger returns plain data (dicts, lists, numbers, strings, numpy arrays or torch tensors). The
:class:`~eval_viewer.debuggers.sequential.SequentialDebugger` splits a batch into datapoints, moves tensors off the
device and writes pages; a debugger only says what to keep, and, through :meth:`BaseDebugger.kinds`, what each kept
value *means* (an image, a feature map, an attention map...) so the viewer draws it without guessing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch.utils.hooks import RemovableHandle

from eval_viewer.debuggers.batching import batch_indices
from eval_viewer.errors import CaptureError

__all__ = ["BaseDebugger", "ForwardDebugger", "Calls", "call_suffix", "merge_calls", "datapoint_batch_size"]

Calls = Literal["all", "first", "last"]


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

    A layer can run more than once in one forward pass (tied weights, recurrent refinement, test-time augmentation
    inside the model, memory attention over frames). ``calls="all"`` (the default) keeps every call: one call gives
    the output of :meth:`process_forward` as it is; several give one dict whose keys carry the call number as a suffix
    (``feature_map``, ``feature_map_1``, ...; outputs that are not dicts become a list, one item per call).
    ``calls="first"`` or ``"last"`` keeps that one call. The sequential debugger starts a new forward pass at every
    call of the model itself, so calls of earlier passes never mix in.
    """

    batch_first_output = False
    """Set by debuggers that read dim 0 of the layer's output as the batch: the hand-over then checks it against the
    batch size, so a ``batch × windows`` output is refused rather than copied whole to every datapoint."""

    def __init__(self, layer_name: str, calls: Calls = "all") -> None:
        if calls not in ("all", "first", "last"):
            raise CaptureError(f"calls must be 'all', 'first' or 'last', got {calls!r}")
        self.layer_name = layer_name
        self.calls = calls
        self._captures: list[Any] = []
        self._leading: list[int | None] = []
        self._max_calls_seen = 1

    @property
    def last_capture(self) -> Any:
        """The capture of the layer's latest call not yet handed over, or None; setting None forgets every call."""
        return self._captures[-1] if self._captures else None

    @last_capture.setter
    def last_capture(self, value: Any) -> None:
        self._captures = [] if value is None else [value]
        self._leading = [] if value is None else [None]

    def discard(self) -> None:
        """Forget every call captured since the last hand-over (a new forward pass starts, or capture stops)."""
        self._captures = []
        self._leading = []

    def attach(self, module: torch.nn.Module) -> list[RemovableHandle]:
        """Register this debugger's hooks on ``module`` and return their handles (removed when capture stops).

        The default is one forward hook calling :meth:`forward_hook_fn`; a debugger that needs more (a pre-hook to
        switch on attention weights, say) overrides this, so the sequential debugger never needs to know.
        """
        return [module.register_forward_hook(self.forward_hook_fn)]

    def attach_context(self, parent: torch.nn.Module) -> list[RemovableHandle]:
        """Hooks on the layer's parent module, for debuggers that need its input to read the layer's (none here)."""
        return []

    def forward_hook_fn(self, module: torch.nn.Module, input: Any, output: Any) -> None:
        """The hook itself: keep what :meth:`process_forward` returns for this call of the layer."""
        if self.calls == "first" and self._captures:
            return
        with torch.no_grad():
            capture = self.process_forward(module, input, output)
        leading = _leading_dim(output, getattr(self, "output_index", 0)) if self.batch_first_output else None
        if self.calls == "last":
            self._captures, self._leading = [capture], [leading]
        else:
            self._captures.append(capture)
            self._leading.append(leading)

    @abstractmethod
    def process_forward(self, module: torch.nn.Module, input: Any, output: Any) -> Any:
        """Turn one forward call of the layer (whole batch) into what to keep."""
        raise NotImplementedError

    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> Any:
        """Hand over the captures of the batch just run, and forget them (a stale capture is never returned twice)."""
        captures, leading = self._captures, self._leading
        self.discard()
        if not captures:
            return None
        batch = datapoint_batch_size(datapoint)
        for rows in leading:
            if batch is not None and rows is not None and rows != batch:
                raise CaptureError(_not_batch_first(type(self).__name__, self.layer_name, rows, batch))
        self._max_calls_seen = max(self._max_calls_seen, len(captures))
        return merge_calls(captures)

    def call_kinds(self) -> dict[str, str]:
        """:meth:`kinds` with the keys of later calls (``key_1``...) added, for as many calls as were seen."""
        base = dict(self.kinds())
        kinds = dict(base)
        for i in range(1, self._max_calls_seen):
            for key, kind in base.items():
                if key:
                    head, _, rest = key.partition(".")
                    kinds[f"{head}{call_suffix(i)}" + (f".{rest}" if rest else "")] = kind
        return kinds


def call_suffix(call: int) -> str:
    """Key suffix of the ``call``-th call: none for the first, ``_1``, ``_2``... after."""
    return f"_{call}" if call else ""


def merge_calls(captures: list[Any]) -> Any:
    """One capture as it is; several as one dict with call-suffixed keys (dicts) or a list (anything else)."""
    if len(captures) == 1:
        return captures[0]
    if all(isinstance(c, Mapping) for c in captures):
        return {f"{key}{call_suffix(i)}": value for i, c in enumerate(captures) for key, value in c.items()}
    return list(captures)


def datapoint_batch_size(datapoint: Any) -> int | None:
    """How many datapoints the batch holds, from ``meta_info["idx"]``; None when the datapoint does not say."""
    meta = datapoint.get("meta_info") if isinstance(datapoint, Mapping) else None
    if not isinstance(meta, Mapping) or "idx" not in meta:
        return None
    return len(batch_indices(meta["idx"]))


def _leading_dim(output: Any, index: int | str) -> int | None:
    from eval_viewer.debuggers.builtins._tensors import select_tensor  # the built-ins import this module

    try:
        tensor = select_tensor(output, index)
    except CaptureError:
        return None
    return int(tensor.size(0)) if tensor.dim() >= 1 else None


def _not_batch_first(cls: str, layer_name: str, rows: int, batch: int) -> str:
    ratio = f" ({rows} = {batch} × {rows // batch}: windows, prompts or objects per datapoint?)" if rows % batch == 0 else ""
    return (
        f"{cls} on {layer_name!r}: the layer's output has {rows} rows in dim 0 but the batch has {batch} datapoints"
        f"{ratio}, so its rows cannot be filed under datapoints. Attach the debugger to a layer whose output is "
        "batch-first (the enclosing block), or use AttentionDebugger, which maps windows and prompts back to "
        "datapoints."
    )
