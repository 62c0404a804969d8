"""Activation statistics of a layer: cheap numbers that show dead, saturated or exploding units per datapoint."""

from __future__ import annotations

from typing import Any

import torch

from eval_viewer.debuggers.base import Calls, ForwardDebugger
from eval_viewer.debuggers.builtins._tensors import per_datapoint_stats, select_tensor
from eval_viewer.log_format import Kind

__all__ = ["ActivationStatsDebugger"]


class ActivationStatsDebugger(ForwardDebugger):
    """Per-datapoint statistics of a layer's output, and per-channel means/stds when it has channels.

    Output (every value has the batch dim first, so each datapoint gets its own scalars)::

        {"stats": {"mean", "std", "min", "max", "nonfinite", "abs_mean", "l2_norm", "sparsity", "positive_ratio",
                   "saturation_low", "saturation_high": (B,)},
         "channel_mean": (B, C), "channel_std": (B, C)}        # channels only for outputs of rank >= 3

    ``sparsity`` is the fraction of exact zeros (dead ReLUs); the saturation ratios count values at or beyond
    ``-saturation`` / ``+saturation`` (tanh/sigmoid-like units stuck at their limits). Channels are dim 1 of
    ``(B, C, ...)``; pass ``channels_last=True`` for token outputs ``(B, N, C)``.
    """

    batch_first_output = True

    def __init__(
        self,
        layer_name: str,
        saturation: float = 1.0,
        output_index: int | str = 0,
        channels_last: bool = False,
        calls: Calls = "all",
    ) -> None:
        super().__init__(layer_name, calls)
        self.saturation = saturation
        self.output_index = output_index
        self.channels_last = channels_last

    def process_forward(self, module: torch.nn.Module, input: Any, output: Any) -> dict[str, Any]:
        x = select_tensor(output, self.output_index, what=f"output of {self.layer_name!r}").detach().float()
        batch = x.shape[0]
        flat = x.reshape(batch, -1)
        stats = per_datapoint_stats(x)
        stats.update(
            abs_mean=flat.abs().mean(dim=1),
            l2_norm=flat.norm(dim=1),
            sparsity=(flat == 0).float().mean(dim=1),
            positive_ratio=(flat > 0).float().mean(dim=1),
            saturation_low=(flat <= -self.saturation).float().mean(dim=1),
            saturation_high=(flat >= self.saturation).float().mean(dim=1),
        )
        result: dict[str, Any] = {"stats": stats}
        if x.dim() >= 3:
            channels = x.movedim(-1, 1) if self.channels_last else x
            per_channel = channels.reshape(batch, channels.shape[1], -1)
            result["channel_mean"] = per_channel.mean(dim=2)
            result["channel_std"] = per_channel.std(dim=2) if per_channel.shape[2] > 1 else torch.zeros_like(
                result["channel_mean"]
            )
        return result

    def kinds(self) -> dict[str, str]:
        return {"stats": Kind.STATS, "channel_mean": Kind.SERIES, "channel_std": Kind.SERIES}
