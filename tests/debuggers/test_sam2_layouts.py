"""SAM2 with batch 2: windows, pooled queries and prompts are filed under their own datapoint and placed on the image.

Real models from Hugging Face ``transformers`` configs with random weights (never a download). Oracles: windowed
attention recomputed here from its definition (each query's softmax over the keys of its window, from the block's own
LayerNorm and qkv projection), and the mask decoder's attention weights as HF's eager implementation returns them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import joblib
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import Sam2HieraDetConfig, Sam2HieraDetModel, Sam2MaskDecoderConfig  # dev extra: never skipped
from transformers.models.sam2.modeling_sam2 import Sam2MaskDecoder

from eval_viewer.debuggers import AttentionDebugger, FeatureMapDebugger, SequentialDebugger
from eval_viewer.errors import CaptureError

IDX = [7, 3]  # dataset indices of the batch, deliberately not 0, 1


def _entry(name: str, cls: type, **args: Any) -> dict[str, Any]:
    return {"name": name, "debugger_config": {"class": cls, "args": args}}


def _capture(model: nn.Module, entries: list[dict[str, Any]], run: Any, out_dir: Path,
             meta: dict[str, Any] | None = None, inputs: Any = None) -> dict[int, dict[str, Any]]:
    """One batch through the real capture path (hooks, split, writer, page on disk); the page as a reader loads it."""
    with SequentialDebugger(entries, model) as debugger:
        debugger.start_epoch(out_dir)
        with torch.no_grad():
            outputs = run()
            debugger({"inputs": inputs, "outputs": outputs, "meta_info": {"idx": IDX, **(meta or {})}}, model)
        debugger.save_all()
    page: dict[int, dict[str, Any]] = {}
    for path in sorted(out_dir.glob("page_*.pkl")):
        page.update(joblib.load(path))
    return page


def _encoder() -> Sam2HieraDetModel:
    """Blocks: 0 windowed (4x4 windows of 4), 1 q-pooled windowed, 2 global, 3 q-pooled, 4 windowed with padding."""
    torch.manual_seed(0)
    config = Sam2HieraDetConfig(
        hidden_size=8, embed_dim_per_stage=[8, 16, 32], num_attention_heads_per_stage=[1, 2, 2],
        blocks_per_stage=[1, 2, 2], window_size_per_stage=[4, 4, 3], global_attention_blocks=[2],
        num_query_pool_stages=2, window_positional_embedding_background_size=[4, 4], attn_implementation="sdpa",
    )
    model = Sam2HieraDetModel(config).eval()
    _sharpen(model)
    return model


def _sharpen(model: nn.Module) -> None:
    """HF's init (std 0.02) gives near-uniform attention, under which any map looks right: give q and k real scale."""
    for name, param in model.named_parameters():
        if name.endswith(("qkv.weight", "q_proj.weight", "k_proj.weight")):
            nn.init.normal_(param, std=0.5)


def _windowed_oracle(block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``(B, heads, Hq*Wq, H*W)``: every query's attention over the image, from the definition of windowed attention.

    The block's LayerNorm, zero padding to whole windows, its qkv projection, q max-pooled when the block pools,
    and for each window softmax(q kᵀ · scale) over that window's keys, placed where those keys lie in the image.
    """
    attn = block.attn
    normed = block.layer_norm1(hidden)
    batch, height, width, _ = normed.shape
    ws_h, ws_w = (block.window_size, block.window_size) if block.window_size else (height, width)
    padded = F.pad(normed, (0, 0, 0, (-width) % ws_w, 0, (-height) % ws_h))
    heads = attn.num_attention_heads
    qkv = attn.qkv(padded).reshape(batch, padded.shape[1], padded.shape[2], 3, heads, -1)
    q, k = qkv[..., 0, :, :], qkv[..., 1, :, :]
    stride = attn.query_stride[0] if attn.query_stride else 1
    if stride > 1:
        q = F.max_pool2d(q.flatten(3).permute(0, 3, 1, 2), stride).permute(0, 2, 3, 1).reshape(
            batch, padded.shape[1] // stride, padded.shape[2] // stride, heads, -1)
    qh, qw, q_rows, q_cols = ws_h // stride, ws_w // stride, height // stride, width // stride
    out = torch.zeros(batch, heads, q_rows * q_cols, height * width)
    for wy in range(padded.shape[1] // ws_h):
        for wx in range(padded.shape[2] // ws_w):
            keys = k[:, wy * ws_h:(wy + 1) * ws_h, wx * ws_w:(wx + 1) * ws_w].reshape(batch, -1, heads, k.shape[-1])
            queries = q[:, wy * qh:(wy + 1) * qh, wx * qw:(wx + 1) * qw].reshape(batch, -1, heads, q.shape[-1])
            probs = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", queries, keys) * attn.scale, dim=-1)
            for qi in range(qh * qw):
                y, x = wy * qh + qi // qw, wx * qw + qi % qw
                if y >= q_rows or x >= q_cols:
                    continue
                for ki in range(ws_h * ws_w):
                    r, c = wy * ws_h + ki // ws_w, wx * ws_w + ki % ws_w
                    if r < height and c < width:
                        out[:, :, y * q_cols + x, r * width + c] = probs[:, :, qi, ki]
    return out


def test_sam2_image_encoder_windows_are_each_datapoints_own_and_placed_on_the_image(tmp_path: Path) -> None:
    model = _encoder()
    images = torch.randn(2, 3, 64, 64)
    inputs: dict[int, torch.Tensor] = {}
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0].detach()))
    with torch.no_grad():
        expected = model(images).last_hidden_state
    blocks = range(len(model.blocks))
    entries = [_entry(f"b{i}", AttentionDebugger, layer_name=f"blocks.{i}.attn", max_tokens=None, max_bytes=None)
               for i in blocks]
    during: dict[str, torch.Tensor] = {}
    page = _capture(model, entries, lambda: during.setdefault("out", model(images).last_hidden_state), tmp_path)
    assert sorted(page) == sorted(IDX)
    assert torch.equal(during["out"], expected)  # capture on == capture off, to the bit
    with torch.no_grad():
        assert torch.equal(model(images).last_hidden_state, expected)  # hooks gone, model untouched
        for i in blocks:
            oracle = _windowed_oracle(model.blocks[i], inputs[i])
            for b, idx in enumerate(IDX):
                attention = page[idx][f"b{i}"]["attention"]
                weights = torch.from_numpy(attention["weights"])
                assert weights.shape == oracle[b].shape, (i, weights.shape)
                torch.testing.assert_close(weights, oracle[b], rtol=0, atol=2e-6, msg=f"block {i}, datapoint {idx}")
                assert math.prod(attention["query_grid"]) == weights.shape[1]
                assert math.prod(attention["key_grid"]) == weights.shape[2]
            assert (oracle[0] - oracle[1]).abs().max() > 0.1  # the two images' maps really differ
    windows = {i: page[7][f"b{i}"]["attention"].get("windows") for i in blocks}
    assert windows[2] is None  # the global block
    assert windows[0]["windows"] == [4, 4] and windows[0]["padding"] == [0, 0]
    assert windows[1]["query_window_size"] == [2, 2] and windows[1]["query_image_grid"] == [8, 8]
    assert windows[4]["window_size"] == [3, 3] and windows[4]["padding"] == [2, 2]
    stats = page[3]["b4"]["stats"]
    assert isinstance(stats["entropy"], float) and 0 < stats["padding_mass"] < 1  # padding takes part in softmax
    row_sums = page[3]["b4"]["attention"]["weights"].sum(-1).mean()
    assert abs(row_sums + stats["padding_mass"] - 1) < 1e-5


def test_sam2_windows_beyond_the_budget_keep_each_querys_own_window_exactly(tmp_path: Path) -> None:
    model = _encoder()
    images = torch.randn(2, 3, 64, 64)
    inputs: dict[int, torch.Tensor] = {}
    for i in (0, 4):
        model.blocks[i].register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0].detach()))
    entries = [_entry("b0", AttentionDebugger, layer_name="blocks.0.attn", max_tokens=64),  # 16x16 keys > 64: local
               _entry("b4", AttentionDebugger, layer_name="blocks.4.attn", max_tokens=8),  # 4x4 grid, padded windows
               _entry("stitched", AttentionDebugger, layer_name="blocks.0.attn", max_tokens=64, windows="stitch")]
    assert torch.backends.mha.get_fastpath_enabled()
    page = _capture(model, entries, lambda: model(images), tmp_path)
    assert torch.backends.mha.get_fastpath_enabled()  # two debuggers on one module give the fast path back
    with torch.no_grad():
        for name, block in (("b0", 0), ("b4", 4)):
            oracle = _windowed_oracle(model.blocks[block], inputs[block])
            height, width = inputs[block].shape[1:3]
            for b, idx in enumerate(IDX):
                attention = page[idx][name]["attention"]
                layout = attention["windows"]
                wh, ww = layout["window_size"]
                assert layout["form"] == "local" and attention["key_grid"] == [wh, ww]
                weights = torch.from_numpy(attention["weights"])
                assert weights.shape == (model.blocks[block].attn.num_attention_heads, len(attention["query_index"]),
                                         wh * ww)
                torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]), rtol=0, atol=1e-5)
                for row, (cell, (top, left)) in enumerate(zip(attention["query_index"], layout["key_window_origin"])):
                    local = weights[:, row].reshape(-1, wh, ww)
                    image = oracle[b][:, cell].reshape(-1, height, width)
                    inside = image[:, top:top + wh, left:left + ww]  # the window, cut at the image's edge
                    torch.testing.assert_close(local[:, :inside.shape[1], :inside.shape[2]], inside, rtol=0, atol=2e-6)
                    assert image.sum() - inside.sum() < 1e-6  # nothing outside the window
    stitched = page[3]["stitched"]["attention"]
    assert stitched["weights"].shape == (1, 64, 64) and stitched["key_grid"] == [8, 8] and stitched["key_pool"] == 2
    assert stitched["windows"]["form"] == "stitched" and len(stitched["query_index"]) == 64
    assert abs(stitched["weights"].sum(-1) - 1).max() < 1e-5  # no padding in block 0: rows keep their mass


def _decoder(implementation: str) -> Sam2MaskDecoder:
    torch.manual_seed(1)
    config = Sam2MaskDecoderConfig(hidden_size=32, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32,
                                   attn_implementation=implementation)
    decoder = Sam2MaskDecoder(config).eval()
    _sharpen(decoder)
    return decoder


def _decoder_inputs(batch: int = 2, prompts: int = 3) -> dict[str, Any]:
    torch.manual_seed(2)
    return dict(
        image_embeddings=torch.randn(batch, 32, 8, 8), image_positional_embeddings=torch.randn(batch, 32, 8, 8),
        sparse_prompt_embeddings=torch.randn(batch, prompts, 2, 32), dense_prompt_embeddings=torch.randn(batch, 32, 8, 8),
        multimask_output=True, high_resolution_features=[torch.randn(batch, 4, 32, 32), torch.randn(batch, 8, 16, 16)],
    )


DECODER_ATTENTION = [
    "transformer.layers.0.self_attn",
    "transformer.layers.1.self_attn",
    "transformer.layers.0.cross_attn_token_to_image",
    "transformer.layers.1.cross_attn_image_to_token",
    "transformer.final_attn_token_to_image",
]


def test_sam2_mask_decoder_keeps_a_prompt_axis_per_datapoint_equal_to_hf_eager(tmp_path: Path) -> None:
    model, eager = _decoder("sdpa"), _decoder("eager")
    eager.load_state_dict(model.state_dict())
    args = _decoder_inputs()
    reference: dict[str, torch.Tensor] = {}
    for name in DECODER_ATTENTION:
        eager.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: reference.__setitem__(name, o[1]))
    with torch.no_grad():
        eager(**args)
        expected_masks = model(**args)[0]
    entries = [_entry(name, AttentionDebugger, layer_name=name, max_tokens=None, max_bytes=None)
               for name in DECODER_ATTENTION]
    during: dict[str, torch.Tensor] = {}
    page = _capture(model, entries, lambda: during.setdefault("masks", model(**args)[0]), tmp_path)
    assert torch.equal(during["masks"], expected_masks)  # capture on == capture off, to the bit
    for name in DECODER_ATTENTION:
        full = reference[name].reshape(2, 3, *reference[name].shape[1:])  # HF: (batch * prompts, heads, Lq, Lk)
        for b, idx in enumerate(IDX):
            attention = page[idx][name]["attention"]
            assert attention["axes"] == ["prompt", "head", "query", "key"] and attention["num_prompts"] == 3
            # layer 0 agrees to 1e-9; later layers see inputs that differ by the two kernels' rounding (~5e-6)
            torch.testing.assert_close(torch.from_numpy(attention["weights"]), full[b], rtol=0, atol=2e-5,
                                       msg=lambda m: f"{name}: {m}")
            assert isinstance(page[idx][name]["stats"]["max"], float)
    image_to_token = page[3]["transformer.layers.1.cross_attn_image_to_token"]["attention"]
    assert image_to_token["query_grid"] == [8, 8]


class ChunkedAttention(nn.Module):
    """Attention over chunks of each sequence with the chunks folded into the batch: nothing in its input says so."""

    def __init__(self, dim: int = 8, chunks: int = 2) -> None:
        super().__init__()
        self.chunks = chunks
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b * self.chunks, n // self.chunks, 3, 1, d).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).reshape(b, n, d)


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = ChunkedAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)


def test_rows_that_cannot_be_mapped_to_datapoints_are_refused_until_declared(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = Wrapper().eval()
    x = torch.randn(2, 12, 8)
    with pytest.raises(CaptureError, match=r"'attn'.*4 rows.*2 datapoints.*groups=G"):
        _capture(model, [_entry("a", AttentionDebugger, layer_name="attn", infer_grid=False)], lambda: model(x),
                 tmp_path / "a")
    page = _capture(model, [_entry("a", AttentionDebugger, layer_name="attn", groups=2, group_axis="chunk")],
                    lambda: model(x), tmp_path / "b")
    q, k, _ = model.attn.qkv(x).reshape(2, 2, 6, 3, 8).unbind(3)
    manual = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)  # (batch, chunk, Lq, Lk)
    for b, idx in enumerate(IDX):
        attention = page[idx]["a"]["attention"]
        assert attention["axes"] == ["chunk", "head", "query", "key"]
        torch.testing.assert_close(torch.from_numpy(attention["weights"])[:, 0], manual[b].detach(), rtol=0, atol=1e-6)


def test_a_feature_debugger_on_a_windowed_layer_is_refused_not_copied_to_every_datapoint(tmp_path: Path) -> None:
    model = _encoder()
    entries = [_entry("f", FeatureMapDebugger, layer_name="blocks.0.attn")]
    with pytest.raises(CaptureError, match=r"32 rows in dim 0 but the batch has 2 .*32 = 2 × 16"):
        _capture(model, entries, lambda: model(torch.randn(2, 3, 64, 64)), tmp_path)


def _memory_attention(implementation: str) -> nn.Module:
    from transformers import Sam2VideoConfig
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoMemoryAttention

    torch.manual_seed(4)
    config = Sam2VideoConfig(memory_attention_hidden_size=32, memory_attention_num_attention_heads=2,
                             memory_attention_num_layers=2, memory_attention_feed_forward_hidden_size=64,
                             memory_attention_rope_feat_sizes=[8, 8])
    config._attn_implementation = implementation
    module = Sam2VideoMemoryAttention(config).eval()
    _sharpen(module)
    return module


def test_sam2_video_memory_attention_over_past_frames_equals_hf_eager(tmp_path: Path) -> None:
    """Memory attention: each datapoint's 8x8 current-frame queries over its own memory (2 frames + 4 pointers)."""
    model, eager = _memory_attention("sdpa"), _memory_attention("eager")
    eager.load_state_dict(model.state_dict())
    torch.manual_seed(5)
    args = (torch.randn(64, 2, 32), torch.randn(2 * 64 + 4, 2, 64), torch.randn(64, 2, 32), torch.randn(132, 2, 64))
    names = ["layers.0.self_attn", "layers.1.cross_attn_image"]
    reference: dict[str, torch.Tensor] = {}
    for name in names:
        eager.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: reference.__setitem__(name, o[1]))
    with torch.no_grad():
        eager(*args, num_object_pointer_tokens=4)
    entries = [_entry(name, AttentionDebugger, layer_name=name, max_tokens=None, max_bytes=None) for name in names]
    page = _capture(model, entries, lambda: model(*args, num_object_pointer_tokens=4), tmp_path)
    for name in names:
        for b, idx in enumerate(IDX):
            attention = page[idx][name]["attention"]
            torch.testing.assert_close(torch.from_numpy(attention["weights"]), reference[name][b], rtol=0, atol=2e-5,
                                       msg=lambda m: f"{name}: {m}")
            assert attention["query_grid"] == [8, 8]
    assert page[3]["layers.1.cross_attn_image"]["attention"]["num_keys"] == 132
