"""The storage budget of recorded attention: what of each call is kept per datapoint (see :mod:`.attention`).

Per call and datapoint the attention debugger always keeps a per-head **summary** over *every* query row of the
kernel (mean row entropy in nats, mean mass of the ``k`` largest weights of a row, largest weight), and for the kept
queries (``max_tokens`` of them) either the **map** (``weights``, keys pooled to ``max_tokens``) when it fits the
debugger's byte budget, or else the exact **top-k** keys of each kept row (indices and values, never pooled). Rows of
**chosen queries** (the prompt points of each datapoint, say) are kept exactly whatever the budget. ``form`` says
what was kept: ``"map"`` (``weights`` present; ``top_k`` too when the map's keys are pooled) or ``"top_k"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch

from eval_viewer.errors import CaptureError

__all__ = [
    "FORM_MAP",
    "FORM_TOP_K",
    "QuerySource",
    "row_summary",
    "summary_of_rows",
    "top_k_rows",
    "chunk_size",
    "datapoint_queries",
    "cells_of_points",
    "nbytes_per_datapoint",
]

FORM_MAP = "map"
"""``weights`` kept (within the byte budget): exact rows when ``key_pool == 1``, else keys summed in blocks and the
exact ``top_k`` rows beside them."""
FORM_TOP_K = "top_k"
"""The map did not fit the budget: the kept queries' exact top-k keys (``top_k``), and the summary."""

QuerySource = Union[str, Callable[[Mapping[str, Any]], Any]]
"""Where each datapoint's chosen queries are: a dotted path into the batch dict (``"meta_info.points"``) or a
callable of the batch dict; either gives ``(B, P)`` query indices or ``(B, ..., 2)`` (x, y) points in input pixels."""

_CHUNK_ELEMENTS = 1 << 23  # 32 MB of float32 probabilities at a time when summarising every row


def row_summary(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``(..., Lk)`` probabilities: entropy (nats, ``0 log 0 = 0``), mass of the ``k`` largest, the max."""
    entropy = -torch.where(rows > 0, rows * rows.clamp_min(1e-30).log(), torch.zeros_like(rows)).sum(dim=-1)
    top = rows.topk(min(k, rows.shape[-1]), dim=-1).values
    return entropy, top.sum(dim=-1), top[..., 0]


def summary_of_rows(entropy: torch.Tensor, mass: torch.Tensor, peak: torch.Tensor, k: int) -> dict[str, Any]:
    """``(rows, heads, queries)`` per-row values -> the per-head summary, ``(rows, heads)`` tensors."""
    return {
        "entropy": entropy.mean(dim=-1),
        "top_k_mass": mass.mean(dim=-1),
        "max": peak.amax(dim=-1),
        "k": int(k),
        "queries": int(entropy.shape[-1]),
    }


def top_k_rows(rows: torch.Tensor, k: int, dtype: torch.dtype | None) -> dict[str, Any]:
    """The ``k`` largest weights of each row of ``(..., Lk)`` and their key indices (the smallest int that holds
    them: int8, int16 or int32), exact."""
    values, index = rows.topk(min(k, rows.shape[-1]), dim=-1)
    index_dtype = next(t for t in (torch.int8, torch.int16, torch.int32) if rows.shape[-1] <= torch.iinfo(t).max)
    return {"index": index.to(index_dtype), "values": values.to(dtype) if dtype is not None else values,
            "k": int(values.shape[-1])}


def chunk_size(rows: int, num_keys: int) -> int:
    """Queries per chunk so that one chunk of probabilities stays within ~32 MB (heads are not known yet: x 1)."""
    return max(1, _CHUNK_ELEMENTS // max(1, rows * num_keys))


def _lookup(datapoint: Mapping[str, Any], path: str) -> Any:
    value: Any = datapoint
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise CaptureError(f"AttentionDebugger queries={path!r}: the batch has no {part!r} there")
        value = value[part]
    return value


def datapoint_queries(datapoint: Mapping[str, Any], source: QuerySource, coords: str, batch: int) -> torch.Tensor:
    """Each datapoint's chosen queries: ``(B, P)`` int64 indices (``coords="index"``) or ``(B, P, 2)`` float (x, y)."""
    value = source(datapoint) if callable(source) else _lookup(datapoint, source)
    try:
        tensor = torch.as_tensor(value).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CaptureError(
            f"AttentionDebugger queries: expected the same number of queries for every datapoint (a tensor or "
            f"nested lists of one shape), got {type(value).__name__}"
        ) from exc
    if tensor.dim() == 0 or tensor.shape[0] != batch:
        raise CaptureError(f"AttentionDebugger queries: shape {tuple(tensor.shape)} is not batch-first ({batch})")
    if coords == "xy":
        if tensor.shape[-1] != 2 or tensor.dim() < 2:
            raise CaptureError(f"AttentionDebugger queries as (x, y) points: (B, ..., 2), not {tuple(tensor.shape)}")
        return tensor.reshape(batch, -1, 2).float()
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise CaptureError(f"AttentionDebugger queries as indices must be integers, got {tensor.dtype}")
    return tensor.reshape(batch, -1).long()


def cells_of_points(points: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """``(..., 2)`` (x, y) points in an ``image_size`` (H, W) image -> the row-major cell of a ``grid`` they fall in."""
    height, width = image_size
    rows = (points[..., 1] * grid[0] / height).floor().long().clamp(0, grid[0] - 1)
    cols = (points[..., 0] * grid[1] / width).floor().long().clamp(0, grid[1] - 1)
    return rows * grid[1] + cols


def nbytes_per_datapoint(tensor: torch.Tensor, datapoints: int, dtype: torch.dtype | None) -> int:
    """What ``tensor`` costs each of ``datapoints`` datapoints on a page, stored as ``dtype``."""
    itemsize = torch.empty((), dtype=dtype).element_size() if dtype is not None else tensor.element_size()
    return math.ceil(tensor.numel() * itemsize / max(1, datapoints))
