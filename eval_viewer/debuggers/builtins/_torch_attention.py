"""Attention of PyTorch's own transformer modules, recomputed from their weights and inputs beside an untouched forward.

``nn.TransformerEncoder``, ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` have fused fast paths in eval
mode (``torch._transformer_encoder_layer_fwd``, ``torch._native_multi_head_attention``), and the encoder turns a
padded batch into a nested tensor when given a padding mask. Switching the fast path off to watch the slow path's
kernel calls changes the model: the encoder's outputs at padded positions stop being zero, and a layer that already
got a nested tensor crashes on the slow path. So for these modules the forward runs exactly as it would, and a
forward pre-hook recomputes ``softmax(q kᵀ/√d + masks)`` per head from the layer's input and its ``in_proj``
weights (a nested input is padded and its lengths become the key padding mask).
"""

from __future__ import annotations

import contextlib
import inspect
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from eval_viewer.errors import CaptureError

__all__ = ["NATIVE_MODULES", "native_layers", "layer_attention_inputs", "mha_query_key", "suspended_hooks"]

NATIVE_MODULES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder)
"""Watched modules whose attention is recomputed from weights (their forward is never changed)."""

_LAYER_SIGNATURE = inspect.signature(nn.TransformerEncoderLayer.forward)
_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def native_layers(module: nn.Module) -> list[nn.Module]:
    """The modules whose pre-hooks record attention when ``module`` is watched: the encoder's layers, or itself."""
    if isinstance(module, nn.TransformerEncoder):
        return list(module.layers)
    return [module]


def _bind(signature: inspect.Signature, module: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    bound = signature.bind(module, *args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def layer_attention_inputs(
    module: nn.Module, args: tuple, kwargs: Mapping[str, Any]
) -> tuple[nn.MultiheadAttention, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(mha, query, key, key_padding_mask, attn_mask)`` of one call, batch-first, nested inputs padded."""
    if isinstance(module, nn.TransformerEncoderLayer):
        call = _bind(_LAYER_SIGNATURE, module, args, kwargs)
        src, padding, mask = call["src"], call["src_key_padding_mask"], call["src_mask"]
        src, padding = _unnest(src, padding)
        x = module.norm1(src) if module.norm_first else src
        mha = module.self_attn
        query = x if mha.batch_first or x.dim() == 2 else x.transpose(0, 1)
        return mha, query, query, padding, mask
    if isinstance(module, nn.MultiheadAttention):
        call = _bind(_MHA_SIGNATURE, module, args, kwargs)
        query, key = call["query"], call["key"]
        padding = call["key_padding_mask"]
        query, _ = _unnest(query, None)
        key, padding = _unnest(key, padding)
        if not module.batch_first and query.dim() == 3:
            query, key = query.transpose(0, 1), key.transpose(0, 1)
        return module, query, key, padding, call["attn_mask"]
    raise CaptureError(f"no native attention recording for {type(module).__name__}")


def _unnest(x: torch.Tensor, padding: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A nested ``(B, *L, E)`` tensor as padded ``(B, Lmax, E)`` and its padding mask (True = padding)."""
    if not x.is_nested:
        return x, padding
    lengths = torch.tensor([t.shape[0] for t in x.unbind()], device=x.device)
    padded = x.to_padded_tensor(0.0)
    mask = torch.arange(padded.shape[1], device=x.device)[None, :] >= lengths[:, None]
    return padded, mask


def mha_query_key(
    mha: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-head ``q (B, h, Lq, d)``, ``k (B, h, Lk, d)`` and an additive mask, as ``nn.MultiheadAttention`` makes them.

    ``query``/``key`` are batch-first ``(B, L, E)`` or unbatched ``(L, E)``. Masks follow MHA's semantics (a True
    entry is *excluded*; float masks are added).
    """
    if mha.bias_k is not None or mha.add_zero_attn:
        raise CaptureError(
            "AttentionDebugger does not recompute nn.MultiheadAttention with add_bias_kv or add_zero_attn; attach "
            "it to the module that calls this attention with need_weights=True instead"
        )
    if query.dim() == 2:
        query, key = query.unsqueeze(0), key.unsqueeze(0)
        key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
    embed, heads = mha.embed_dim, mha.num_heads
    if mha._qkv_same_embed_dim:
        w_q, w_k, _ = mha.in_proj_weight.chunk(3)
    else:
        w_q, w_k = mha.q_proj_weight, mha.k_proj_weight
    b_q, b_k = (mha.in_proj_bias[:embed], mha.in_proj_bias[embed : 2 * embed]) if mha.in_proj_bias is not None else (
        None, None)
    batch, num_q, num_k = query.shape[0], query.shape[1], key.shape[1]
    q = F.linear(query, w_q, b_q).reshape(batch, num_q, heads, -1).transpose(1, 2)
    k = F.linear(key, w_k, b_k).reshape(batch, num_k, heads, -1).transpose(1, 2)
    mask = None
    if attn_mask is not None:
        mask = attention_mask_float(attn_mask, q.dtype)
        if mask.dim() == 3:  # (B * heads, Lq, Lk)
            mask = mask.reshape(batch, heads, num_q, num_k)
    if key_padding_mask is not None:
        padding = attention_mask_float(key_padding_mask, q.dtype).reshape(batch, 1, 1, num_k)
        mask = padding if mask is None else mask + padding
    return q, k, mask


def attention_mask_float(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An MHA-style mask as an additive float mask: True (excluded) -> -inf, False -> 0; float masks as they are."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


@contextlib.contextmanager
def suspended_hooks(module: nn.Module) -> Iterator[None]:
    """No forward hooks on ``module`` or inside it for the block: a replay is seen by no debugger and no hook turns
    a fused fast path off. The hook dicts are put back as they were (handles keep working)."""
    saved = [(m, m._forward_hooks, m._forward_pre_hooks) for m in module.modules()]
    try:
        for m, _, _ in saved:
            m._forward_hooks, m._forward_pre_hooks = OrderedDict(), OrderedDict()
        yield
    finally:
        for m, hooks, pre_hooks in saved:
            m._forward_hooks, m._forward_pre_hooks = hooks, pre_hooks
