"""Feature maps and raw layer outputs, captured by a forward hook.

:class:`FeatureMapDebugger` keeps a (shrunk) ``(C, H, W)`` map per datapoint plus its statistics over the *full*
map, so a reader sees both the picture and numbers that were not distorted by the shrinking.
:class:`LayerOutputDebugger` keeps any layer output as it is, optionally average-pooled, for layers whose output is
not a spatial map (logits, embeddings) or when the exact values matter.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from eval_viewer.debuggers.base import Calls, ForwardDebugger
from eval_viewer.debuggers.builtins._tensors import (
    cast_float,
    downsample_spatial,
    per_datapoint_stats,
    select_tensor,
    tokens_to_grid,
)
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import Kind

__all__ = ["FeatureMapDebugger", "LayerOutputDebugger"]

logger = logging.getLogger(__name__)


class FeatureMapDebugger(ForwardDebugger):
    """Feature map of a layer per datapoint, with per-datapoint mean/std/min/max.

    Output (batch dim first)::

        {"feature_map": (B, C', H', W'), "stats": {"mean": (B,), "std": (B,), "min": (B,), "max": (B,),
         "nonfinite": (B,)}, "channels": [int], "original_shape": [C, H, W]}

    ``max_channels`` keeps the first channels (the same ones for every datapoint, so maps can be compared);
    ``max_side`` average-pools the map; ``dtype=torch.float16`` halves the page size. A token output ``(B, N, C)``
    is laid on its patch grid (``grid`` or a square inferred after class tokens).
    """

    batch_first_output = True

    def __init__(
        self,
        layer_name: str,
        max_channels: int | None = 16,
        max_side: int | None = 32,
        dtype: torch.dtype | None = None,
        output_index: int | str = 0,
        grid: tuple[int, int] | None = None,
        calls: Calls = "all",
    ) -> None:
        super().__init__(layer_name, calls)
        self.max_channels = max_channels
        self.max_side = max_side
        self.dtype = dtype
        self.output_index = output_index
        self.grid = grid

    def process_forward(self, module: torch.nn.Module, input: Any, output: Any) -> dict[str, Any]:
        x = select_tensor(output, self.output_index, what=f"output of {self.layer_name!r}").detach()
        if x.dim() == 3:
            x = tokens_to_grid(x, self.grid)
        if x.dim() != 4:
            raise CaptureError(
                f"FeatureMapDebugger on {self.layer_name!r} needs a (B, C, H, W) or (B, N, C) output, got "
                f"{tuple(x.shape)}; use LayerOutputDebugger for other shapes"
            )
        stats = per_datapoint_stats(x)
        channels = x.shape[1] if self.max_channels is None else min(self.max_channels, x.shape[1])
        kept = downsample_spatial(x[:, :channels], self.max_side)
        return {
            "feature_map": cast_float(kept, self.dtype),
            "stats": stats,
            "channels": list(range(channels)),
            "original_shape": list(x.shape[1:]),
        }

    def kinds(self) -> dict[str, str]:
        return {"feature_map": Kind.FEATURE_MAP, "stats": Kind.STATS}


class LayerOutputDebugger(ForwardDebugger):
    """A layer's output tensor per datapoint, optionally average-pooled by ``downsample_factor`` / to ``max_side``.

    Output::

        {"output": (B, ...), "original_shape": [...], "downsample_factor": int}

    Only 4-D ``(B, C, H, W)`` and 5-D outputs are pooled (their trailing dims are spatial by convention); other
    outputs are kept whole. ``kind`` tags the saved tensor when the default guess (feature map for 4-D, series for
    2-D) is not what it means.
    """

    batch_first_output = True

    def __init__(
        self,
        layer_name: str,
        downsample_factor: int = 1,
        max_side: int | None = None,
        dtype: torch.dtype | None = None,
        output_index: int | str = 0,
        kind: str | None = None,
        calls: Calls = "all",
    ) -> None:
        super().__init__(layer_name, calls)
        if downsample_factor < 1:
            raise CaptureError(f"downsample_factor must be >= 1, got {downsample_factor}")
        if kind is not None and kind not in Kind.ALL:
            raise CaptureError(f"Unknown kind {kind!r}; use one of eval_viewer.log_format.Kind.ALL")
        self.downsample_factor = downsample_factor
        self.max_side = max_side
        self.dtype = dtype
        self.output_index = output_index
        self.kind = kind
        self._seen_rank: int | None = None

    def process_forward(self, module: torch.nn.Module, input: Any, output: Any) -> dict[str, Any]:
        x = select_tensor(output, self.output_index, what=f"output of {self.layer_name!r}").detach()
        self._seen_rank = x.dim()
        kept = downsample_spatial(x, self.max_side, self.downsample_factor)
        factor = x.shape[-1] // kept.shape[-1] if kept.dim() in (4, 5) else 1
        return {
            "output": cast_float(kept, self.dtype),
            "original_shape": list(x.shape[1:]),
            "downsample_factor": int(max(1, factor)),
        }

    def kinds(self) -> dict[str, str]:
        if self.kind is not None:
            return {"output": self.kind}
        guess = {4: Kind.FEATURE_MAP, 2: Kind.SERIES, 1: Kind.SCALAR}.get(self._seen_rank or 0)
        return {"output": guess} if guess else {}
