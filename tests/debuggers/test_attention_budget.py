"""The attention storage budget on SAM2 built from configs (random weights, batch 2, never a download).

Oracles are computed independently of the capture: windowed and global attention of the Hiera encoder from the
definition (``_windowed_oracle``: the block's own LayerNorm and qkv, softmax per window), the mask decoder's from
Hugging Face's eager implementation. Summaries, top-k rows and chosen queries are checked against those full maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_sam2_layouts import IDX, _capture, _decoder, _decoder_inputs, _encoder, _entry, _windowed_oracle
from transformers import (
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2Model,
    Sam2PromptEncoderConfig,
    Sam2VisionConfig,
)

from eval_viewer.debuggers import AttentionDebugger
from eval_viewer.debuggers.builtins import _attention_budget
from eval_viewer.debuggers.builtins.attention import DEFAULT_MAX_BYTES


def _entropy(rows: torch.Tensor) -> torch.Tensor:
    """Row entropy in nats over the full map, written out independently: sum over nonzero p of -p log p."""
    logs = torch.where(rows > 0, rows.double().log(), torch.zeros_like(rows, dtype=torch.double))
    return -(rows.double() * logs).sum(-1)


def _sam2(size: int = 128) -> Sam2Model:
    """All of SAM2's 19 attention modules (12 Hiera blocks: windowed, q-pooled, global, padded windows; 7 in the
    mask decoder) at a small width and image size."""
    grid = size // 4
    backbone = Sam2HieraDetConfig(hidden_size=16, embed_dim_per_stage=[16, 32, 64, 128], image_size=[size, size],
                                  num_attention_heads_per_stage=[1, 2, 4, 8], attn_implementation="sdpa")
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16], fpn_hidden_size=32,
                              backbone_feature_sizes=[[grid, grid], [grid // 2, grid // 2], [grid // 4, grid // 4]])
    prompts = Sam2PromptEncoderConfig(hidden_size=32, image_size=size, mask_input_channels=4)
    config = Sam2Config(vision_config=vision, attn_implementation="sdpa", prompt_encoder_config=prompts,
                        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=32, num_attention_heads=2, mlp_dim=64,
                                                                  iou_head_hidden_dim=32))
    torch.manual_seed(0)
    return Sam2Model(config).eval()


def _map_bytes(value: dict[str, Any]) -> int:
    return sum(v["weights"].nbytes for k, v in value.items() if k.startswith("attention") and "weights" in v)


@pytest.mark.parametrize("max_bytes", [DEFAULT_MAX_BYTES, 6000])
def test_the_budget_is_respected_on_every_sam2_attention_module(max_bytes: int, tmp_path: Path) -> None:
    model = _sam2()
    names = [n for n, m in model.named_modules() if type(m).__name__ in ("Sam2MultiScaleAttention", "Sam2Attention")]
    assert len(names) == 19
    torch.manual_seed(1)
    pixels, points = torch.randn(2, 3, 128, 128), torch.randint(0, 128, (2, 2, 1, 2)).float()
    entries = [_entry(n, AttentionDebugger, layer_name=n, max_bytes=max_bytes) for n in names]
    page = _capture(model, entries, lambda: model(pixel_values=pixels, input_points=points,
                                                  input_labels=torch.ones(2, 2, 1, dtype=torch.long)), tmp_path)
    forms = []
    for idx in IDX:
        for name in names:
            value = page[idx][name]
            assert _map_bytes(value) <= max_bytes, name
            attention = value["attention"]
            forms.append(attention["form"])
            assert set(attention["summary"]) == {"entropy", "top_k_mass", "max", "k", "queries"}
            if attention["form"] == "top_k":
                assert "weights" not in attention and attention["top_k"]["index"].shape[-1] == attention["top_k"]["k"]
            else:
                assert attention["form"] == "map" and ("top_k" in attention) == (attention["key_pool"] > 1)
    assert "top_k" in forms and "map" in forms  # the budget decided, both ways


def _kept_rows(oracle: torch.Tensor, attention: dict[str, Any]) -> torch.Tensor:
    return oracle[:, attention["query_index"]]


def test_summaries_and_top_k_rows_equal_those_of_the_full_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_attention_budget, "_CHUNK_ELEMENTS", 300)  # the summary of every query, in many chunks
    model = _encoder()
    images = torch.randn(2, 3, 64, 64)
    inputs: dict[int, torch.Tensor] = {}
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0].detach()))
    blocks = (0, 1, 2, 3)  # windowed (local rows), q-pooled windowed, global (plain rows), q-pooled global
    entries = [_entry(f"b{i}", AttentionDebugger, layer_name=f"blocks.{i}.attn", max_tokens=20, max_bytes=0, top_k=5)
               for i in blocks]
    page = _capture(model, entries, lambda: model(images), tmp_path)
    with torch.no_grad():
        for i in blocks:
            oracle = _windowed_oracle(model.blocks[i], inputs[i])  # (B, heads, all queries, image keys)
            for b, idx in enumerate(IDX):
                attention = page[idx][f"b{i}"]["attention"]
                full = oracle[b]
                summary = attention["summary"]
                assert attention["form"] == "top_k" and summary["queries"] == full.shape[1]
                np.testing.assert_allclose(summary["entropy"], _entropy(full).mean(-1), rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(summary["top_k_mass"], full.sort(-1, descending=True).values[..., :5]
                                           .sum(-1).mean(-1), rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(summary["max"], full.flatten(1).amax(1), rtol=1e-5, atol=1e-7)
                top = attention["top_k"]
                kept = _kept_rows(full, attention)  # (heads, kept queries, image keys)
                expected = kept.sort(-1, descending=True).values[..., :5]
                np.testing.assert_allclose(top["values"], expected, rtol=0, atol=2e-6)
                index = torch.from_numpy(top["index"]).long()
                if attention.get("windows"):  # local rows: a key of the query's own window, placed on the image
                    origin = torch.tensor(attention["windows"]["key_window_origin"])[None, :, None, :]
                    wh, ww = top["key_grid"]
                    width = attention["windows"]["image_grid"][1]
                    index = (origin[..., 0] + index // ww) * width + origin[..., 1] + index % ww
                # the stored indices point at exactly those weights in the full map
                np.testing.assert_allclose(kept.gather(-1, index), top["values"], rtol=0, atol=2e-6)


def test_decoder_summaries_keep_the_prompt_axis_and_equal_hf_eager(tmp_path: Path) -> None:
    model, eager = _decoder("sdpa"), _decoder("eager")
    eager.load_state_dict(model.state_dict())
    args = _decoder_inputs()
    name = "transformer.layers.0.cross_attn_image_to_token"  # 64 image queries over the prompt's tokens
    reference: dict[str, torch.Tensor] = {}
    eager.get_submodule(name).register_forward_hook(lambda m, i, o: reference.__setitem__("w", o[1]))
    with torch.no_grad():
        eager(**args)
    page = _capture(model, [_entry("d", AttentionDebugger, layer_name=name, max_tokens=16, max_bytes=0, top_k=3)],
                    lambda: model(**args), tmp_path)
    full = reference["w"].reshape(2, 3, *reference["w"].shape[1:])  # (batch, prompts, heads, queries, keys)
    for b, idx in enumerate(IDX):
        attention = page[idx]["d"]["attention"]
        assert attention["summary"]["entropy"].shape == (3, 2)  # (prompt, head)
        np.testing.assert_allclose(attention["summary"]["entropy"], _entropy(full[b]).mean(-1), rtol=1e-4, atol=1e-5)
        kept = full[b][:, :, attention["query_index"]]
        np.testing.assert_allclose(attention["top_k"]["values"], kept.sort(-1, descending=True).values[..., :3],
                                   rtol=0, atol=2e-5)


def test_chosen_queries_are_each_datapoints_own_prompt_points_exactly(tmp_path: Path) -> None:
    model = _encoder()
    images = torch.randn(2, 3, 64, 64)
    inputs: dict[int, torch.Tensor] = {}
    for i in (0, 2):
        model.blocks[i].register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0].detach()))
    points = torch.tensor([[[3.0, 60.0], [40.0, 10.0]], [[63.0, 0.0], [17.5, 33.0]]])  # (x, y) pixels, per datapoint
    entries = [_entry(f"b{i}", AttentionDebugger, layer_name=f"blocks.{i}.attn", max_tokens=4, max_bytes=0,
                      queries="meta_info.points") for i in (0, 2)]
    entries.append(_entry("by_index", AttentionDebugger, layer_name="blocks.2.attn", max_tokens=4, max_bytes=0,
                          queries=lambda d: d["meta_info"]["cells"], query_coords="index"))
    cells = torch.tensor([[5, 9], [0, 63]])
    page = _capture(model, entries, lambda: model(images), tmp_path,
                    meta={"points": points, "cells": cells}, inputs=images)
    with torch.no_grad():
        for i, grid in ((0, 16), (2, 8)):
            oracle = _windowed_oracle(model.blocks[i], inputs[i])
            height = inputs[i].shape[1]
            for b, idx in enumerate(IDX):
                chosen = page[idx][f"b{i}"]["attention"]["chosen"]
                expected_cells = [int(y * grid // 64) * grid + int(x * grid // 64) for x, y in points[b].tolist()]
                assert chosen["query_index"].tolist() == expected_cells
                weights = torch.from_numpy(chosen["weights"])  # (heads, points, keys)
                rows = oracle[b][:, expected_cells]
                if i == 0:  # windowed: each row over its own window, with the window's place on the image
                    wh, ww = chosen["key_grid"]
                    for p, (top, left) in enumerate(chosen["key_window_origin"].tolist()):
                        image = rows[:, p].reshape(-1, height, height)[:, top:top + wh, left:left + ww]
                        torch.testing.assert_close(weights[:, p].reshape(-1, wh, ww), image, rtol=0, atol=2e-6)
                else:  # global: rows over every key of the image, exact; and the same given as query indices
                    torch.testing.assert_close(weights, rows, rtol=0, atol=2e-6)
                    by_index = page[idx]["by_index"]["attention"]["chosen"]
                    assert by_index["query_index"].tolist() == cells[b].tolist()
                    torch.testing.assert_close(torch.from_numpy(by_index["weights"]), oracle[b][:, cells[b]], rtol=0,
                                               atol=2e-6)
