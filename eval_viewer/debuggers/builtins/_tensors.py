"""Small tensor helpers shared by the built-in debuggers: pick a tensor out of a layer's output, shrink it, summarise it.

Every helper keeps the batch dimension first, because the sequential debugger splits a batch into datapoints along
dim 0; a per-datapoint statistic is therefore a tensor of shape ``(B,)``, never a Python float over the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from eval_viewer.errors import CaptureError

__all__ = [
    "select_tensor",
    "downsample_spatial",
    "resize_mask",
    "per_datapoint_stats",
    "cast_float",
    "tokens_to_grid",
    "square_grid",
]


def select_tensor(value: Any, index: int | str = 0, what: str = "output") -> torch.Tensor:
    """The tensor in a layer's output: the tensor itself, item ``index`` of a tuple/list, or key ``index`` of a dict.

    Layers return tuples (``nn.MultiheadAttention``, LSTMs) or dicts (detection heads); saying which element to keep
    is part of the debugger's config, and a wrong choice fails loudly here instead of saving the wrong thing.
    """
    if isinstance(value, torch.Tensor):
        return value
    try:
        if isinstance(value, Mapping):
            item = value[index] if index in value else list(value.values())[int(index)]
        elif isinstance(value, Sequence):
            item = value[int(index)]
        else:
            item = None
    except (IndexError, KeyError, ValueError, TypeError):
        item = None
    if not isinstance(item, torch.Tensor):
        raise CaptureError(
            f"Cannot find a tensor at index {index!r} of the layer {what} (a {type(value).__name__}); "
            f"set output_index to the position or key of the tensor to capture"
        )
    return item


def _pooled_size(size: Sequence[int], max_side: int | None, factor: int = 1) -> tuple[int, ...]:
    """Target spatial size: divide by ``factor`` and then by whatever keeps the longest side within ``max_side``."""
    size = [max(1, math.ceil(s / max(1, factor))) for s in size]
    if max_side is not None and max(size) > max_side:
        shrink = max(size) / max_side
        size = [max(1, math.ceil(s / shrink - 1e-9)) for s in size]
    return tuple(size)


def downsample_spatial(x: torch.Tensor, max_side: int | None = None, factor: int = 1) -> torch.Tensor:
    """Average-pool the trailing spatial dims of ``(B, C, H, W)`` / ``(B, C, D, H, W)`` by ``factor`` and to ``max_side``.

    Area averaging (not striding) so that a shrunk feature map still shows where the energy is. Other ranks are
    returned unchanged: there is no safe guess which of their dims are spatial.
    """
    if x.dim() not in (4, 5):
        return x
    spatial = tuple(x.shape[2:])
    target = _pooled_size(spatial, max_side, factor)
    if target == spatial:
        return x
    pool = F.adaptive_avg_pool2d if x.dim() == 4 else F.adaptive_avg_pool3d
    return pool(x.float(), target).to(x.dtype)


def resize_mask(mask: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """Nearest-neighbour shrink of an integer map ``(B, H, W)`` so its longest side is at most ``max_side``."""
    spatial = tuple(mask.shape[-2:])
    target = _pooled_size(spatial, max_side)
    if target == spatial:
        return mask
    resized = F.interpolate(mask.unsqueeze(1).float(), size=target, mode="nearest-exact")
    return resized.squeeze(1).to(mask.dtype)


def per_datapoint_stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, std, min, max and the count of NaN/Inf of each datapoint: tensors of shape ``(B,)``.

    Computed on finite values only, so one NaN does not hide the rest of the distribution; the NaN count says it is
    there.
    """
    flat = x.detach().reshape(x.shape[0], -1).float()
    finite = torch.isfinite(flat)
    count = finite.sum(dim=1).clamp(min=1)
    zeroed = torch.where(finite, flat, torch.zeros_like(flat))
    mean = zeroed.sum(dim=1) / count
    var = (torch.where(finite, flat - mean[:, None], torch.zeros_like(flat)) ** 2).sum(dim=1) / (count - 1).clamp(min=1)
    big = torch.finfo(torch.float32).max
    return {
        "mean": mean,
        "std": var.sqrt(),
        "min": torch.where(finite, flat, torch.full_like(flat, big)).amin(dim=1),
        "max": torch.where(finite, flat, torch.full_like(flat, -big)).amax(dim=1),
        "nonfinite": (~finite).sum(dim=1).float(),
    }


def cast_float(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Detach and, when ``dtype`` is given, cast floating tensors to it (``torch.float16`` halves a page)."""
    x = x.detach()
    if dtype is not None and x.is_floating_point():
        return x.to(dtype)
    return x


def square_grid(num_tokens: int, max_prefix: int = 8) -> tuple[tuple[int, int], int] | None:
    """``((s, s), prefix)`` when ``num_tokens - prefix`` is a square ``s*s >= 4`` for the smallest ``prefix``.

    ViT-style token sequences are a square patch grid behind a few class/register tokens; knowing the grid lets the
    viewer lay a token's map over the image. The prefix must be small next to the grid (at most a quarter of it), so
    a short sequence is not mistaken for a tiny grid behind many "class tokens".
    """
    for prefix in range(0, max_prefix + 1):
        rest = num_tokens - prefix
        side = math.isqrt(max(rest, 0))
        if side >= 2 and side * side == rest and 4 * prefix <= rest:
            return (side, side), prefix
    return None


def tokens_to_grid(x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """``(B, N, C)`` tokens -> ``(B, C, h, w)``, dropping leading class tokens; ``grid`` given or inferred as a square."""
    if x.dim() != 3:
        raise CaptureError(f"Expected tokens of shape (B, N, C), got {tuple(x.shape)}")
    num_tokens = x.shape[1]
    if grid is None:
        found = square_grid(num_tokens)
        if found is None:
            raise CaptureError(
                f"Cannot lay {num_tokens} tokens on a square grid; pass grid=(h, w) to the debugger"
            )
        grid, _ = found
    h, w = grid
    if h * w > num_tokens:
        raise CaptureError(f"grid {grid} needs {h * w} tokens, the layer gives {num_tokens}")
    patches = x[:, num_tokens - h * w :, :]
    return patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
