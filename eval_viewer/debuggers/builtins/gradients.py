"""Gradients flowing through one layer, from a backward pass the debugger runs itself.

Evaluation has no backward pass, so :class:`GradientsDebugger` runs the model again on the batch's inputs with
gradients on and differentiates a per-datapoint objective: the user's loss (``loss_fn(outputs, labels)`` returning one
loss per datapoint) or, without one, the target-class score GradCAM uses. A full backward hook on the layer
(``register_full_backward_hook``) receives the gradients with respect to the layer's output and input. The layer's
input is made a fresh leaf for the re-run, so the backward pass stops at the layer and no parameter's ``.grad`` is
touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from eval_viewer.debuggers.base import BaseDebugger
from eval_viewer.debuggers.builtins._targets import (
    ForwardFn,
    Pixels,
    TargetClass,
    choose_targets,
    class_scores,
    default_forward,
    gradient_pass,
    select_logits,
    usable_inputs,
)
from eval_viewer.debuggers.builtins._tensors import cast_float, downsample_spatial
from eval_viewer.debuggers.layers import get_layer_by_name
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import Kind

__all__ = ["GradientsDebugger", "LossFn"]

LossFn = Callable[[Any, Any], torch.Tensor]
"""``loss_fn(outputs, labels)`` -> per-datapoint losses ``(B,)`` (or ``(B, ...)``, summed per datapoint)."""


def _grad_stats(grad: torch.Tensor) -> dict[str, torch.Tensor]:
    flat = grad.reshape(grad.shape[0], -1).float()
    return {"norm": flat.norm(dim=1), "abs_mean": flat.abs().mean(dim=1), "abs_max": flat.abs().amax(dim=1)}


class GradientsDebugger(BaseDebugger):
    """Gradient of the objective with respect to the output of ``layer_name``, per datapoint.

    Output::

        {"grad_output": (B, C', H', W') or (B, ...),   # dObjective/dOutput, channels/size limited like feature maps
         "stats": {"norm", "abs_mean", "abs_max", "input_norm": (B,)},
         "objective": (B,)}                             # the per-datapoint loss or class score differentiated

    ``loss_fn`` must return one loss per datapoint (``reduction="none"``): a batch mean would mix datapoints. Without
    it the objective is the class score of ``target_class`` (see :class:`GradCAMDebugger`).
    """

    def __init__(
        self,
        layer_name: str,
        loss_fn: LossFn | None = None,
        target_class: TargetClass = None,
        pixels: Pixels = "predicted",
        background_class: int | None = 0,
        max_channels: int | None = 16,
        max_side: int | None = 32,
        dtype: torch.dtype | None = None,
        output_key: str | int | None = None,
        forward_fn: ForwardFn | None = None,
    ) -> None:
        self.layer_name = layer_name
        self.loss_fn = loss_fn
        self.target_class = target_class
        self.pixels = pixels
        self.background_class = background_class
        self.max_channels = max_channels
        self.max_side = max_side
        self.dtype = dtype
        self.output_key = output_key
        self.forward_fn = forward_fn or default_forward
        self._rank: int | None = None

    def _objective(self, outputs: Any, datapoint: Mapping[str, Any]) -> torch.Tensor:
        if self.loss_fn is not None:
            loss = self.loss_fn(outputs, datapoint.get("labels"))
            if not isinstance(loss, torch.Tensor) or loss.dim() == 0:
                raise CaptureError(
                    "GradientsDebugger's loss_fn must return one loss per datapoint (use reduction='none'); "
                    "a batch mean would give every datapoint a share of the others' gradients"
                )
            return loss.reshape(loss.shape[0], -1).sum(dim=1)
        logits = select_logits(outputs, self.output_key)
        targets = choose_targets(logits, self.target_class, self.background_class, datapoint, outputs)
        return class_scores(logits, targets, self.pixels)

    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> dict[str, Any]:
        layer = get_layer_by_name(model, self.layer_name)
        seen: dict[str, Any] = {}

        def fresh_input(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            position = next((i for i, a in enumerate(args) if isinstance(a, torch.Tensor)), None)
            if position is None:
                raise CaptureError(f"Layer {self.layer_name!r} gets no tensor argument to differentiate through")
            leaf = args[position].detach().requires_grad_(True)
            seen["input"] = leaf
            return args[:position] + (leaf,) + args[position + 1 :]

        def backward_hook(module: torch.nn.Module, grad_input: Any, grad_output: Any) -> None:
            seen["grad_output"] = grad_output[0]

        handles = [layer.register_forward_pre_hook(fresh_input), layer.register_full_backward_hook(backward_hook)]
        try:
            with gradient_pass("GradientsDebugger"):
                inputs = usable_inputs(datapoint["inputs"])
                objective = self._objective(self.forward_fn(model, inputs), datapoint)
                if "input" not in seen:
                    raise CaptureError(f"Layer {self.layer_name!r} did not run in the forward pass")
                (grad_input,) = torch.autograd.grad(objective.sum(), seen["input"], allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        grad_output = seen.get("grad_output")
        if grad_input is None or grad_output is None:
            raise CaptureError(f"The objective does not depend on layer {self.layer_name!r}")
        grad_output = grad_output.detach()
        stats = _grad_stats(grad_output)
        stats["input_norm"] = grad_input.detach().reshape(grad_input.shape[0], -1).float().norm(dim=1)
        kept = grad_output
        if kept.dim() == 4 and self.max_channels is not None:
            kept = kept[:, : self.max_channels]
        kept = downsample_spatial(kept, self.max_side)
        self._rank = kept.dim()
        return {"grad_output": cast_float(kept, self.dtype), "stats": stats, "objective": objective.detach()}

    def kinds(self) -> dict[str, str]:
        kinds = {"stats": Kind.STATS, "objective": Kind.SCALAR}
        if self._rank in (None, 4):  # (B, C, H, W): a feature map per datapoint
            kinds["grad_output"] = Kind.FEATURE_MAP
        return kinds
