"""What the gradient debuggers differentiate: re-running the model with grad on, and the score of a target class.

The eval loop runs under ``torch.no_grad()``, so a debugger that needs gradients runs the model again on the batch's
inputs inside ``torch.enable_grad()``. The class score is per datapoint and the batch objective is their *sum*, so
the gradient each datapoint receives is exactly its own (a mean would scale it by 1/B).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Union

import torch

from eval_viewer.errors import CaptureError

__all__ = [
    "ForwardFn",
    "Pixels",
    "TargetClass",
    "default_forward",
    "gradient_pass",
    "select_logits",
    "input_size",
    "choose_targets",
    "class_scores",
    "usable_inputs",
]

ForwardFn = Callable[[torch.nn.Module, Any], Any]
Pixels = Literal["predicted", "all"]
TargetClass = Union[int, Sequence[int], torch.Tensor, Callable[[Mapping[str, Any], Any], Any], None]
"""One class for every datapoint, one per datapoint (a list or a ``(B,)`` integer tensor), a callable of
``(datapoint, outputs)`` returning either, or None (the prediction)."""


def default_forward(model: torch.nn.Module, inputs: Any) -> Any:
    """``model(inputs)``: how the loop helper calls the model too; pass ``forward_fn`` for anything else."""
    return model(inputs)


@contextlib.contextmanager
def gradient_pass(what: str) -> Iterator[None]:
    """Gradients on for a re-run of the model, also inside ``torch.inference_mode()`` (which is left for the re-run).

    Tensors made under inference mode (the batch's inputs, say) cannot take part in autograd; :func:`usable_inputs`
    copies them. A model that keeps inference tensors of its own (buffers or caches filled under inference mode)
    still fails; that error is turned into one that says what to do.
    """
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    except RuntimeError as exc:
        if "nference tensor" not in str(exc):
            raise
        raise CaptureError(
            f"{what} needs gradients, and the model holds tensors made under torch.inference_mode(), which autograd "
            f"cannot use ({exc}). Evaluate under torch.no_grad() instead of torch.inference_mode()."
        ) from exc


def usable_inputs(inputs: Any) -> Any:
    """``inputs`` with inference-mode tensors copied into normal ones (dicts, lists and tuples walked)."""
    if isinstance(inputs, torch.Tensor):
        return inputs.clone() if inputs.is_inference() else inputs
    if isinstance(inputs, Mapping):
        return {k: usable_inputs(v) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)) and not hasattr(inputs, "_fields"):
        return type(inputs)(usable_inputs(v) for v in inputs)
    return inputs


def select_logits(outputs: Any, output_key: str | int | None) -> torch.Tensor:
    """The class-logit tensor ``(B, C)`` or ``(B, C, H, W)`` in the model's outputs."""
    if isinstance(outputs, torch.Tensor) and output_key is None:
        return outputs
    if output_key is None and isinstance(outputs, Mapping):
        tensors = [v for v in outputs.values() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0]
    try:
        value = outputs[output_key]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        value = None
    if not isinstance(value, torch.Tensor):
        raise CaptureError(
            f"Cannot find class logits in the model output (a {type(outputs).__name__}); set output_key to the key "
            f"or position of the (B, C) or (B, C, H, W) logits"
        )
    return value


def input_size(inputs: Any, input_key: str | None) -> tuple[int, int] | None:
    """Spatial size ``(H, W)`` of the input image: ``inputs`` itself, ``inputs[input_key]``, or the first 4-D tensor."""
    if isinstance(inputs, Mapping):
        if input_key is not None:
            inputs = inputs.get(input_key)
        else:
            inputs = next((v for v in inputs.values() if isinstance(v, torch.Tensor) and v.dim() == 4), None)
    if isinstance(inputs, torch.Tensor) and inputs.dim() >= 3:
        return int(inputs.shape[-2]), int(inputs.shape[-1])
    return None


def choose_targets(
    logits: torch.Tensor,
    target_class: TargetClass,
    background_class: int | None,
    datapoint: Mapping[str, Any] | None = None,
    outputs: Any = None,
) -> torch.Tensor:
    """The class explained for each datapoint, ``(B,)`` int64.

    ``target_class`` an int: that class everywhere; a list or ``(B,)`` integer tensor: one class per datapoint, in
    batch order; a callable: called as ``target_class(datapoint, outputs)`` (the batch dict and the re-run's model
    outputs) and its int, list or tensor used as above. Otherwise classification explains the predicted class;
    segmentation the class covering most predicted pixels apart from ``background_class`` (an explanation of
    "background" is rarely the question), or the most probable non-background class when only background is
    predicted.
    """
    batch, num_classes = logits.shape[:2]
    if callable(target_class) and not isinstance(target_class, torch.Tensor):
        target_class = target_class(datapoint if datapoint is not None else {}, outputs)
    if target_class is not None:
        return _given_targets(target_class, batch, num_classes, logits.device)
    detached = logits.detach()
    if detached.dim() == 2:
        return detached.argmax(dim=1)
    predicted = detached.argmax(dim=1).reshape(batch, -1)
    area = torch.nn.functional.one_hot(predicted, num_classes).sum(dim=1).float()
    mean_prob = detached.softmax(dim=1).reshape(batch, num_classes, -1).mean(dim=2)
    if background_class is not None and num_classes > 1:
        area[:, background_class] = -1.0
        mean_prob[:, background_class] = -1.0
    best_area, by_area = area.max(dim=1)
    return torch.where(best_area > 0, by_area, mean_prob.argmax(dim=1))


def _given_targets(target: Any, batch: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """An int, a sequence of ints or an integer tensor of 0 or 1 dims as ``(B,)`` int64, checked against the model."""
    if isinstance(target, bool) or isinstance(target, float):
        raise CaptureError(f"target_class must be an int, a list or tensor of ints, or a callable; got {target!r}")
    if isinstance(target, int):
        values = torch.full((batch,), int(target), dtype=torch.long)
    else:
        try:
            values = torch.as_tensor(target).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise CaptureError(f"target_class must be ints, one per datapoint; got {type(target).__name__}") from exc
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool or values.dim() > 1:
            raise CaptureError(f"target_class must be ints of 0 or 1 dims, got {values.dtype} {tuple(values.shape)}")
        values = values.reshape(-1).long()
        if values.numel() == 1:
            values = values.expand(batch)
        if values.numel() != batch:
            raise CaptureError(f"target_class gives {values.numel()} classes for a batch of {batch} datapoints")
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.numel():
        raise CaptureError(f"target_class {int(bad[0])} is outside the model's {num_classes} classes")
    return values.to(device)


def class_scores(logits: torch.Tensor, targets: torch.Tensor, pixels: Pixels = "predicted") -> torch.Tensor:
    """Per-datapoint score of the target class, ``(B,)``, differentiable.

    Classification: the target logit. Segmentation: the sum of the target's logits over the pixels predicted as the
    target (``pixels="predicted"``; all pixels when none is) or over all pixels (``pixels="all"``).
    """
    if pixels not in ("predicted", "all"):
        raise CaptureError(f"pixels must be 'predicted' or 'all', got {pixels!r}")
    index = targets.view(-1, *([1] * (logits.dim() - 1)))
    target_logits = logits.gather(1, index.expand(-1, 1, *logits.shape[2:])).squeeze(1)
    if logits.dim() == 2:
        return target_logits
    flat = target_logits.reshape(logits.shape[0], -1)
    if pixels == "all":
        return flat.sum(dim=1)
    region = (logits.detach().argmax(dim=1) == index.squeeze(1)).reshape(logits.shape[0], -1)
    region = torch.where(region.any(dim=1, keepdim=True), region, torch.ones_like(region))
    return (flat * region).sum(dim=1)
