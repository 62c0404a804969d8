"""The attention debugger against explicit softmax(q kᵀ/√d) computed from the same module's own projections."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from eval_viewer.debuggers.builtins.attention import (
    AttentionDebugger,
    attention_probabilities,
    limit_grid_tokens,
    limit_tokens,
)
from eval_viewer.log_format import Kind


class SDPABlock(nn.Module):
    """A ViT-style self-attention block that only ever calls the fused kernel."""

    def __init__(self, dim: int = 16, heads: int = 4, calls: int = 1) -> None:
        super().__init__()
        self.heads, self.calls = heads, calls
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def qk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.calls):
            q, k, v = self.qk(x)
            x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape))
        return x


def _explicit(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def _capture(debugger: AttentionDebugger, module: nn.Module, *args: object, **kwargs: object) -> tuple[object, dict]:
    handles = debugger.attach(module)
    try:
        with torch.no_grad():
            out = module(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return out, debugger(None, module)  # type: ignore[arg-type]


def test_sdpa_block_maps_equal_explicit_softmax_and_output_is_unchanged() -> None:
    torch.manual_seed(0)
    block = SDPABlock().eval()
    x = torch.randn(3, 1 + 25, 16)  # a class token and a 5x5 grid
    with torch.no_grad():
        expected_out = block(x)
        q, k, _ = block.qk(x)
    out, captured = _capture(AttentionDebugger("", max_tokens=None), block, x)
    attn = captured["attention"]["weights"]
    assert attn.shape == (3, 4, 26, 26)
    torch.testing.assert_close(attn, _explicit(q, k), rtol=0, atol=1e-6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 4, 26), rtol=0, atol=1e-5)
    assert torch.equal(out, expected_out)
    assert captured["attention"]["key_grid"] == [5, 5] and captured["attention"]["num_prefix_tokens"] == 1
    assert captured["stats"]["entropy"].shape == (3,)


def test_multihead_attention_without_weights_matches_its_own_weights_and_projections() -> None:
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(12, 3, batch_first=True).eval()
    x = torch.randn(2, 9, 12)
    with torch.no_grad():
        expected_out, _ = mha(x, x, x, need_weights=False)  # eval + no_grad: the fused fast path
        _, own = mha(x, x, x, need_weights=True, average_attn_weights=False)
    was_fast = torch.backends.mha.get_fastpath_enabled()
    (out, weights), captured = _capture(AttentionDebugger("", max_tokens=None), mha, x, x, x, need_weights=False)
    assert weights is None and torch.backends.mha.get_fastpath_enabled() == was_fast
    attn = captured["attention"]["weights"]
    torch.testing.assert_close(attn, own, rtol=0, atol=1e-6)
    w_q, w_k, _ = mha.in_proj_weight.chunk(3)
    b_q, b_k, _ = mha.in_proj_bias.chunk(3)
    q = (x @ w_q.T + b_q).reshape(2, 9, 3, 4).transpose(1, 2)
    k = (x @ w_k.T + b_k).reshape(2, 9, 3, 4).transpose(1, 2)
    torch.testing.assert_close(attn, _explicit(q, k).detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-6)


def test_multihead_attention_with_weights_is_recorded_per_head_and_returned_as_asked() -> None:
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(8, 2).eval()  # sequence-first, default need_weights=True, averaged
    x = torch.randn(5, 2, 8)
    with torch.no_grad():
        _, expected_avg = mha(x, x, x)
    (_, averaged), captured = _capture(AttentionDebugger("", max_tokens=None), mha, x, x, x)
    torch.testing.assert_close(averaged, expected_avg, rtol=0, atol=1e-6)
    torch.testing.assert_close(captured["attention"]["weights"].mean(dim=1), expected_avg, rtol=0, atol=1e-6)


def test_transformer_encoder_layer_is_captured_without_editing_it() -> None:
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True).eval()
    x = torch.randn(2, 16, 16)
    _, captured = _capture(AttentionDebugger("", max_tokens=None), layer, x)
    with torch.no_grad():
        _, own = layer.self_attn(x, x, x, need_weights=True, average_attn_weights=False)  # norm_first=False
    torch.testing.assert_close(captured["attention"]["weights"], own, rtol=0, atol=1e-6)
    assert captured["attention"]["key_grid"] == [4, 4]


@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "float_mask", "scale", "gqa", "cross"])
def test_probabilities_reproduce_the_fused_kernel(case: str) -> None:
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    kwargs: dict = {}
    if case == "causal":
        kwargs["is_causal"] = True
    elif case == "bool_mask":
        kwargs["attn_mask"] = torch.rand(2, 1, 6, 6) > 0.3
        kwargs["attn_mask"][..., 0] = True  # no fully masked row
    elif case == "float_mask":
        kwargs["attn_mask"] = torch.randn(6, 6)
    elif case == "scale":
        kwargs["scale"] = 0.05
    elif case == "gqa":
        k, v = k[:, :2], v[:, :2]
        kwargs["enable_gqa"] = True
    elif case == "cross":
        k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 10, 8)
    probs = attention_probabilities(q, k, **kwargs)
    if case == "gqa":
        v = v.repeat_interleave(2, dim=1)
    torch.testing.assert_close(probs @ v, F.scaled_dot_product_attention(q, k if case != "gqa" else k.repeat_interleave(
        2, dim=1), v, **{key: val for key, val in kwargs.items() if key != "enable_gqa"}), rtol=1e-5, atol=1e-5)
    index = torch.tensor([0, 3, 5])
    torch.testing.assert_close(attention_probabilities(q, k, query_index=index, **kwargs), probs[..., index, :])


def test_max_tokens_keeps_evenly_spaced_queries_and_pools_keys_on_the_grid() -> None:
    torch.manual_seed(5)
    block = SDPABlock(dim=8, heads=2).eval()
    x = torch.randn(2, 1 + 64, 8)  # class token + 8x8 grid
    with torch.no_grad():
        q, k, _ = block.qk(x)
    full = _explicit(q, k)
    _, captured = _capture(AttentionDebugger("", max_tokens=20), block, x)
    tokens = captured["attention"]
    kept = tokens["query_index"]
    assert len(kept) == 20 and kept[0] == 0 and kept[-1] == 64 and kept == limit_tokens(65, 20)
    assert tokens["key_pool"] == 2 and tokens["key_grid"] == [4, 4] and tokens["num_prefix_tokens"] == 1
    attn = captured["attention"]["weights"]
    assert attn.shape == (2, 2, 20, 1 + 16)
    rows = full[:, :, kept]
    pooled = rows[..., 1:].reshape(2, 2, 20, 4, 2, 4, 2).sum(dim=(4, 6)).reshape(2, 2, 20, 16)
    torch.testing.assert_close(attn, torch.cat([rows[..., :1], pooled], dim=-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 20), rtol=0, atol=1e-5)


def test_every_call_in_the_module_is_kept_in_call_order_and_tagged() -> None:
    block = SDPABlock(calls=2).eval()
    debugger = AttentionDebugger("", max_tokens=None, infer_grid=False)
    _, captured = _capture(debugger, block, torch.randn(1, 7, 16))
    assert {"attention", "attention_1", "stats_1"} <= set(captured)
    assert captured["attention"]["key_grid"] is None
    assert not torch.equal(captured["attention"]["weights"], captured["attention_1"]["weights"])
    assert debugger.kinds()["attention_1"] == Kind.ATTENTION


def test_a_failing_forward_leaves_no_mode_and_restores_the_fast_path() -> None:
    block = SDPABlock().eval()
    debugger = AttentionDebugger("")
    handles = debugger.attach(block)
    depth = torch._C._len_torch_function_stack()
    fast = torch.backends.mha.get_fastpath_enabled()
    with pytest.raises(RuntimeError):
        block(torch.randn(2, 5, 7))  # wrong width
    assert torch._C._len_torch_function_stack() == depth
    assert torch.backends.mha.get_fastpath_enabled() == fast
    for handle in handles:
        handle.remove()
    assert debugger(None, block) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("grid,budget", [((64, 64), 256), ((4, 4), 8), ((30, 60), 256), ((5, 3), 100), ((1, 40), 7)])
def test_grid_queries_are_a_lattice_over_the_whole_grid_within_the_budget(grid: tuple[int, int], budget: int) -> None:
    cells = limit_grid_tokens(grid, budget)
    h, w = grid
    assert len(cells) <= budget and cells == sorted(set(cells)) and all(0 <= c < h * w for c in cells)
    rows, cols = {c // w for c in cells}, {c % w for c in cells}
    assert {0, h - 1} <= rows and {0, w - 1} <= cols  # corners to corners, not the first rows only
    assert len(cells) == len(rows) * len(cols)  # a lattice
    if h * w > budget:
        assert len(cells) >= budget // 2
