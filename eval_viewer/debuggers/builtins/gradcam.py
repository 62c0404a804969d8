"""GradCAM from real gradients: which regions of the input the target layer used for the chosen class.

Selvaraju et al., "Grad-CAM" (ICCV 2017): with activations ``A`` ``(K, h, w)`` of a layer and the gradient of the
class score with respect to them, the map is ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of
``dScore/dA_k``. It is computed here by running the model again on the batch's inputs with gradients on (the eval
loop runs under ``torch.no_grad()``), a forward hook holding the layer's activation and ``torch.autograd.grad``
asking for its gradient, so no parameter's ``.grad`` is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from eval_viewer.debuggers.base import BaseDebugger
from eval_viewer.debuggers.builtins._targets import (
    ForwardFn,
    Pixels,
    TargetClass,
    choose_targets,
    class_scores,
    default_forward,
    gradient_pass,
    input_size,
    select_logits,
    usable_inputs,
)
from eval_viewer.debuggers.builtins._tensors import cast_float, select_tensor, tokens_to_grid
from eval_viewer.debuggers.layers import get_layer_by_name
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import Kind

__all__ = ["GradCAMDebugger", "gradcam_from"]

logger = logging.getLogger(__name__)


def gradcam_from(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``ReLU(sum_k mean_hw(gradient_k) * activation_k)`` for ``(B, K, h, w)`` inputs -> ``(B, h, w)``."""
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activation).sum(dim=1))


def _leaf_output(output: Any, index: int | str, store: dict[str, torch.Tensor]) -> Any:
    """Forward-hook body: remember the activation, made differentiable when the model is frozen."""
    act = select_tensor(output, index, what="target layer output")
    if act.requires_grad:
        store["activation"] = act
        return None
    leaf = act.detach().requires_grad_(True)
    store["activation"] = leaf
    if isinstance(output, torch.Tensor):
        return leaf
    if isinstance(output, tuple) and isinstance(index, int):
        return output[:index] + (leaf,) + output[index + 1 :]
    if isinstance(output, list) and isinstance(index, int):
        return output[:index] + [leaf] + output[index + 1 :]
    if isinstance(output, Mapping):
        return {**output, index: leaf}
    raise CaptureError("GradCAM needs a differentiable target layer output; unfreeze the model or pick another layer")


class GradCAMDebugger(BaseDebugger):
    """GradCAM heatmap of ``target_layer`` per datapoint, at the input image's size.

    Output::

        {"gradcam": (B, H, W) float >= 0, "target_class": (B,) int, "score": (B,) float}

    ``target_class``: an int explains that class for every datapoint; a list or ``(B,)`` integer tensor one class
    per datapoint of the batch; a callable ``target_class(datapoint, outputs)`` (the batch dict and the re-run's model
    outputs) returns either, e.g. ``lambda d, o: d["labels"]`` to explain each datapoint's own label; None explains
    the predicted class (classification) or the predicted class with the largest area apart from ``background_class``
    (segmentation).
    For segmentation the score is the sum of the class's logits over the pixels predicted as it (``pixels="all"``:
    over all pixels). ``normalize`` divides each map by its maximum. Token layers ``(B, N, C)`` are laid on their
    grid (``grid`` or a square after class tokens). ``forward_fn(model, inputs)`` calls the model (default
    ``model(inputs)``); ``output_key`` picks the logits from a dict/tuple output, ``input_key`` the image whose size
    the map is resized to. Batch-norm layers in training mode would update their statistics on the re-run: capture
    in eval mode.
    """

    def __init__(
        self,
        target_layer: str,
        target_class: TargetClass = None,
        pixels: Pixels = "predicted",
        background_class: int | None = 0,
        normalize: bool = True,
        output_key: str | int | None = None,
        input_key: str | None = None,
        output_index: int | str = 0,
        grid: tuple[int, int] | None = None,
        dtype: torch.dtype | None = None,
        forward_fn: ForwardFn | None = None,
    ) -> None:
        if pixels not in ("predicted", "all"):
            raise CaptureError(f"pixels must be 'predicted' or 'all', got {pixels!r}")
        self.target_layer = target_layer
        self.target_class = target_class
        self.pixels = pixels
        self.background_class = background_class
        self.normalize = normalize
        self.output_key = output_key
        self.input_key = input_key
        self.output_index = output_index
        self.grid = grid
        self.dtype = dtype
        self.forward_fn = forward_fn or default_forward

    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> dict[str, Any]:
        layer = get_layer_by_name(model, self.target_layer)
        store: dict[str, torch.Tensor] = {}
        handle = layer.register_forward_hook(lambda m, i, o: _leaf_output(o, self.output_index, store))
        try:
            with gradient_pass("GradCAM"):
                inputs = usable_inputs(datapoint["inputs"])
                outputs = self.forward_fn(model, inputs)
                logits = select_logits(outputs, self.output_key)
                targets = choose_targets(logits, self.target_class, self.background_class, datapoint, outputs)
                scores = class_scores(logits, targets, self.pixels)
                if "activation" not in store:
                    raise CaptureError(f"GradCAM target layer {self.target_layer!r} did not run in the forward pass")
                activation = store["activation"]
                (gradient,) = torch.autograd.grad(scores.sum(), activation, allow_unused=True)
        finally:
            handle.remove()
        if gradient is None:
            raise CaptureError(f"The model's logits do not depend on GradCAM target layer {self.target_layer!r}")
        activation, gradient = activation.detach(), gradient.detach()
        if activation.dim() == 3:
            activation, gradient = tokens_to_grid(activation, self.grid), tokens_to_grid(gradient, self.grid)
        if activation.dim() != 4:
            raise CaptureError(f"GradCAM needs a (B, K, h, w) or (B, N, K) layer output, got {tuple(activation.shape)}")
        cam = gradcam_from(activation.float(), gradient.float())
        size = input_size(datapoint["inputs"], self.input_key)
        if size is not None and tuple(cam.shape[-2:]) != size:
            cam = F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1).clamp_min(0)
        if self.normalize:
            peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)
            cam = cam / peak[:, None, None]
        return {"gradcam": cast_float(cam, self.dtype), "target_class": targets.detach(), "score": scores.detach()}

    def kinds(self) -> dict[str, str]:
        return {"gradcam": Kind.HEATMAP, "target_class": Kind.SCALAR, "score": Kind.SCALAR}
