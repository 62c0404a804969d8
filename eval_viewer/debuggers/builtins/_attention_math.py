"""The arithmetic of recorded attention and the mode that sees fused kernels' arguments (see :mod:`.attention`).

``attention_probabilities`` recomputes ``softmax(q kᵀ · scale + mask)`` with the semantics of
``scaled_dot_product_attention``; ``limit_tokens``/``limit_grid_tokens`` choose the queries kept within a budget and
``pool_keys`` sums probability mass over blocks of keys; ``AttentionMode`` is the ``TorchFunctionMode`` that hands
every SDPA / ``multi_head_attention_forward`` call made inside a watched module to a recorder.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["attention_probabilities", "limit_tokens", "limit_grid_tokens", "pool_keys", "AttentionMode"]

_SDPA = F.scaled_dot_product_attention
_MHA_FORWARD = F.multi_head_attention_forward
_MHA_SIGNATURE = inspect.signature(_MHA_FORWARD)


def attention_probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    query_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(q kᵀ · scale + mask)`` with the semantics of ``scaled_dot_product_attention``, for the kept queries.

    ``query`` ``(..., Lq, E)``, ``key`` ``(..., Lk, E)``; a boolean mask marks the pairs that take part, a float mask
    is added; causal masking is top-left aligned like the fused kernel. Only the rows in ``query_index`` are computed,
    so memory grows with the kept queries, not with ``Lq²``. Computed in float32.
    """
    q, k = query.float(), key.float()
    if enable_gqa and k.dim() >= 3 and q.shape[-3] != k.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    num_q, num_k = q.shape[-2], k.shape[-2]
    if query_index is not None:
        query_index = query_index.to(q.device)
        q = q.index_select(-2, query_index)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale
    rows = query_index if query_index is not None else torch.arange(num_q, device=q.device)
    if is_causal:
        allowed = torch.ones(num_q, num_k, dtype=torch.bool, device=q.device).tril().index_select(0, rows)
        logits = logits.masked_fill(~allowed, float("-inf"))
    if attn_mask is not None:
        mask = attn_mask
        if mask.dim() >= 2 and mask.shape[-2] == num_q and query_index is not None:
            mask = mask.index_select(-2, query_index)
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask.float()
    return torch.softmax(logits, dim=-1).nan_to_num(0.0)  # a fully masked row attends nowhere


def limit_tokens(num_tokens: int, max_tokens: int | None) -> list[int]:
    """Evenly spaced token indices, at most ``max_tokens`` of them, first and last included."""
    if max_tokens is None or num_tokens <= max_tokens:
        return list(range(num_tokens))
    if max_tokens <= 1:
        return [0]
    return sorted({round(i * (num_tokens - 1) / (max_tokens - 1)) for i in range(max_tokens)})


def limit_grid_tokens(grid: tuple[int, int], max_tokens: int | None) -> list[int]:
    """Cells of an ``h x w`` grid (row-major) on an evenly spaced lattice of at most ``max_tokens`` cells.

    Evenly spaced in raster order would keep the same few columns of every row; a lattice samples the whole image.
    """
    h, w = grid
    if max_tokens is None or h * w <= max_tokens:
        return list(range(h * w))
    side = max(1, math.isqrt(max_tokens))
    rows = limit_tokens(h, max(1, min(h, round(side * math.sqrt(h / w)))))
    cols = limit_tokens(w, max(1, min(w, max_tokens // len(rows))))
    return [r * w + c for r in rows for c in cols]


def pool_keys(
    attn: torch.Tensor, grid: tuple[int, int] | None, prefix: int, max_tokens: int | None
) -> tuple[torch.Tensor, tuple[int, int] | None, int]:
    """Sum probability mass over blocks of neighbouring keys until at most ``max_tokens`` remain (rows keep sum 1)."""
    num_k = attn.shape[-1]
    if max_tokens is None or num_k <= max_tokens:
        return attn, grid, 1
    lead = attn.shape[:-1]
    if grid is not None:
        h, w = grid
        room = max(1, max_tokens - prefix)
        block = max(2, math.ceil(math.sqrt(h * w / room)))
        spatial = attn[..., prefix:].reshape(-1, 1, h, w)
        spatial = F.pad(spatial, (0, (-w) % block, 0, (-h) % block))
        pooled = F.avg_pool2d(spatial, block) * (block * block)
        new_grid = (pooled.shape[-2], pooled.shape[-1])
        pooled = pooled.reshape(*lead, -1)
        return torch.cat([attn[..., :prefix], pooled], dim=-1), new_grid, block
    block = math.ceil(num_k / max_tokens)
    padded = F.pad(attn, (0, (-num_k) % block))
    return padded.reshape(*lead, -1, block).sum(dim=-1), None, block


class AttentionMode(TorchFunctionMode):
    """Sees every torch call made while the watched module runs; records SDPA calls and lets everything else pass."""

    def __init__(self, record: Callable[..., None]) -> None:
        super().__init__()
        self._record = record

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is _SDPA:
            self._record_sdpa(*args, **kwargs)
            return func(*args, **kwargs)
        if func is _MHA_FORWARD:
            return self._multi_head_attention(func, args, kwargs)
        return func(*args, **kwargs)

    def _record_sdpa(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> None:
        self._record(
            lambda index: attention_probabilities(query, key, attn_mask, is_causal, scale, enable_gqa, index),
            query.shape,
            key.shape[-2],
        )

    def _multi_head_attention(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``F.multi_head_attention_forward`` runs its body without this mode, so watch its SDPA call directly."""
        names = list(_MHA_SIGNATURE.parameters)
        bound = dict(zip(names, args), **kwargs)
        if bound.get("need_weights", True):
            average = bound.get("average_attn_weights", True)
            bound["average_attn_weights"] = False
            out, weights = func(**bound)
            per_head = weights if weights.dim() == 4 else weights.unsqueeze(0)
            self._record(
                lambda index: per_head if index is None else per_head.index_select(-2, index.to(per_head.device)),
                per_head.shape, per_head.shape[-1])
            return out, (weights.mean(dim=-3) if average else weights)
        original = F.scaled_dot_product_attention

        def watched(*sdpa_args: Any, **sdpa_kwargs: Any) -> torch.Tensor:
            self._record_sdpa(*sdpa_args, **sdpa_kwargs)
            return original(*sdpa_args, **sdpa_kwargs)

        F.scaled_dot_product_attention = watched  # the name multi_head_attention_forward looks up
        try:
            return func(*args, **kwargs)
        finally:
            F.scaled_dot_product_attention = original
