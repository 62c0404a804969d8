"""``AttentionDebugger(dtype=torch.float16)`` on a real ViT built from a config (random weights, batch 2, no download).

The float16 storage option must change only how the kept weights are stored: every stored weight (full map, pooled
map, top-k values, chosen rows) is the float32 capture rounded to float16, indices and layout are unchanged, the
per-head summaries and stats stay float32 and identical, the byte budget counts float16 bytes, and the page on disk
shrinks by about half of those weights. Hugging Face's eager ``output_attentions`` is the outside oracle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from test_sam2_layouts import IDX, _capture, _entry
from transformers import ViTConfig, ViTModel

from eval_viewer.debuggers import AttentionDebugger

LAYER = "layers.0.attention"
HEADS = 4
CELLS = torch.tensor([[0, 9], [64, 30]])  # each datapoint's chosen queries (token indices; 0 is the class token)
FLOAT_ARRAYS = (("weights",), ("top_k", "values"), ("chosen", "weights"))


def _vit() -> tuple[ViTModel, ViTModel]:
    """A one-layer ViT on 32 px images, 4 px patches: an 8 x 8 grid behind a class token, 65 tokens, 4 heads."""
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=HEADS, intermediate_size=64, image_size=32,
                 patch_size=4)
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(attn_implementation="sdpa", **small)).eval()
    eager = ViTModel(ViTConfig(attn_implementation="eager", **small)).eval()
    eager.load_state_dict(model.state_dict())
    return model, eager


def _forms(dtype: torch.dtype | None) -> list[dict[str, Any]]:
    """One debugger per storage form: the full map, a pooled map with its top-k, top-k only with chosen rows."""
    return [
        _entry("full", AttentionDebugger, layer_name=LAYER, max_tokens=None, max_bytes=None, dtype=dtype),
        _entry("pooled", AttentionDebugger, layer_name=LAYER, max_tokens=16, max_bytes=None, dtype=dtype),
        _entry("top_k", AttentionDebugger, layer_name=LAYER, max_tokens=16, max_bytes=0, dtype=dtype,
               queries="meta_info.cells", query_coords="index"),
    ]


def _run(model: ViTModel, entries: list[dict[str, Any]], pixels: torch.Tensor, out: Path) -> dict[int, Any]:
    return _capture(model, entries, lambda: model(pixel_values=pixels), out, meta={"cells": CELLS})


def _get(attention: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = attention
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _disk(out: Path) -> int:
    return sum(p.stat().st_size for p in out.glob("page_*.pkl"))


def test_float16_storage_is_the_float32_capture_rounded_and_halves_the_weights_on_disk(tmp_path: Path) -> None:
    model, eager = _vit()
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = eager(pixel_values=pixels, output_attentions=True).attentions[0]  # (B, heads, 65, 65)
    full32 = _run(model, _forms(None), pixels, tmp_path / "f32")
    full16 = _run(model, _forms(torch.float16), pixels, tmp_path / "f16")
    halved = 0
    for b, idx in enumerate(IDX):
        for name, form in (("full", "map"), ("pooled", "map"), ("top_k", "top_k")):
            a32, a16 = full32[idx][name]["attention"], full16[idx][name]["attention"]
            assert a32["form"] == a16["form"] == form, name
            for key in ("query_index", "num_queries", "num_keys", "query_grid", "key_grid", "num_prefix_tokens",
                        "key_pool", "axes", "module_call"):
                assert a16[key] == a32[key], (name, key)
            stored = [path for path in FLOAT_ARRAYS if _get(a32, path) is not None]
            assert stored == [p for p in FLOAT_ARRAYS if _get(a16, p) is not None], name
            for path in stored:
                w32, w16 = _get(a32, path), _get(a16, path)
                assert w32.dtype == np.float32 and w16.dtype == np.float16, (name, path)
                np.testing.assert_array_equal(w16, w32.astype(np.float16))  # rounded once, from the same float32
                np.testing.assert_allclose(w16.astype(np.float32), w32, rtol=2**-11, atol=2**-24)
                halved += w32.nbytes // 2
            if "top_k" in a32:  # where the key indices point does not depend on how the values are stored
                assert a16["top_k"]["index"].dtype == a32["top_k"]["index"].dtype == np.int8
                np.testing.assert_array_equal(a16["top_k"]["index"], a32["top_k"]["index"])
            if "chosen" in a32:
                np.testing.assert_array_equal(a16["chosen"]["query_index"], CELLS[b].numpy())
            # the per-head summaries over every query stay float32, (heads,) per datapoint, and do not change
            s32, s16 = a32["summary"], a16["summary"]
            assert set(s16) == {"entropy", "top_k_mass", "max", "k", "queries"}
            assert (s16["k"], s16["queries"]) == (s32["k"], s32["queries"]) == (8, 65)
            for key in ("entropy", "top_k_mass", "max"):
                assert s16[key].dtype == np.float32 and s16[key].shape == (HEADS,), (name, key)
                np.testing.assert_array_equal(s16[key], s32[key])
            assert full16[idx][name]["stats"] == full32[idx][name]["stats"]
        # the outside oracle: the float16 map is HF eager's attention to float16 precision
        np.testing.assert_allclose(full16[idx]["full"]["attention"]["weights"].astype(np.float32),
                                   reference[b].numpy(), rtol=2**-11, atol=2e-6)
    saved = _disk(tmp_path / "f32") - _disk(tmp_path / "f16")
    assert halved > len(IDX) * HEADS * 65 * 65 * 2  # the full maps (and more) were stored: 2 bytes saved per weight
    assert 0.95 * halved <= saved <= 1.1 * halved, (saved, halved)


def test_the_byte_budget_counts_float16_bytes(tmp_path: Path) -> None:
    """A budget that fits the pooled map in float16 but not in float32 keeps the map only in float16."""
    model, _ = _vit()
    pixels = torch.randn(2, 3, 32, 32)
    fits = HEADS * 16 * 10 * 2  # 16 kept queries over 10 keys (the class token and a 3 x 3 pooled grid), float16
    pages = {}
    for dtype in (None, torch.float16):
        entries = [_entry("a", AttentionDebugger, layer_name=LAYER, max_tokens=16, max_bytes=fits, dtype=dtype)]
        pages[dtype] = _run(model, entries, pixels, tmp_path / str(dtype))
    for idx in IDX:
        a32, a16 = pages[None][idx]["a"]["attention"], pages[torch.float16][idx]["a"]["attention"]
        assert a16["form"] == "map" and a16["weights"].shape == (HEADS, 16, 10) and a16["weights"].nbytes == fits
        assert a32["form"] == "top_k" and "weights" not in a32
        np.testing.assert_array_equal(a16["top_k"]["values"], a32["top_k"]["values"].astype(np.float16))
