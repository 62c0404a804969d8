"""Find a submodule by the dotted name users see in ``model.named_modules()``."""

from __future__ import annotations

import difflib

import torch

from eval_viewer.errors import CaptureError

__all__ = ["get_layer_by_name"]


def get_layer_by_name(model: torch.nn.Module, layer_name: str) -> torch.nn.Module:
    """The submodule at ``layer_name`` (``"backbone.layer4.1.conv2"``; numeric parts index Sequential/ModuleList).

    ``""`` is the model itself. An unknown name raises :class:`CaptureError` listing the closest existing names,
    because a typo in a config should fail at start-up, not silently capture nothing.
    """
    if layer_name == "":
        return model
    try:
        return model.get_submodule(layer_name)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        close = difflib.get_close_matches(layer_name, names, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise CaptureError(
            f"No layer named {layer_name!r} in {type(model).__name__}.{hint} "
            f"(names come from model.named_modules(); {len(names)} layers in all)"
        ) from None
