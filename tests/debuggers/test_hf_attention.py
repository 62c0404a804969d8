"""Attention maps against Hugging Face's own eager ``output_attentions``: ViT and BERT with padding, batch 2.

Random weights from tiny configs (never a download); the model under capture runs its SDPA path, the reference is a
copy with the same weights on HF's eager path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import torch
from transformers import BertConfig, BertModel, ViTConfig, ViTModel  # the dev extra: these tests never skip

from eval_viewer.debuggers import AttentionDebugger, SequentialDebugger


def _pair(cls: type, config_cls: type, **config: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    model = cls(config_cls(attn_implementation="sdpa", **config)).eval()
    eager = cls(config_cls(attn_implementation="eager", **config)).eval()
    eager.load_state_dict(model.state_dict())
    return model, eager


def _capture(model: torch.nn.Module, names: list[str], run: Any, out: Path) -> dict[int, dict[str, Any]]:
    entries = [{"name": n, "debugger_config": {"class": AttentionDebugger, "args": {"layer_name": n, "max_tokens": None}}}
               for n in names]
    with SequentialDebugger(entries, model) as debugger:
        debugger.start_epoch(out)
        with torch.no_grad():
            run()
            debugger({"meta_info": {"idx": [5, 2]}}, model)
        debugger.save_all()
    page: dict[int, dict[str, Any]] = {}
    for path in out.glob("page_*.pkl"):
        page.update(joblib.load(path))
    return page


def test_vit_sdpa_maps_equal_hf_eager_output_attentions(tmp_path: Path) -> None:
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                 patch_size=8)
    model, eager = _pair(ViTModel, ViTConfig, **small)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = eager(pixel_values=pixels, output_attentions=True).attentions
    names = ["layers.0.attention", "layers.1.attention"]
    page = _capture(model, names, lambda: model(pixel_values=pixels), tmp_path)
    for layer, name in enumerate(names):
        for b, idx in enumerate([5, 2]):
            attention = page[idx][name]["attention"]
            torch.testing.assert_close(torch.from_numpy(attention["weights"]), reference[layer][b], rtol=0, atol=1e-6)
            assert attention["key_grid"] == [4, 4] and attention["num_prefix_tokens"] == 1


def test_bert_with_padding_sdpa_maps_equal_hf_eager_output_attentions(tmp_path: Path) -> None:
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=50)
    model, eager = _pair(BertModel, BertConfig, **small)
    ids = torch.randint(1, 50, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0  # the second sentence is padded
    with torch.no_grad():
        reference = eager(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    names = ["encoder.layer.0.attention", "encoder.layer.1.attention"]
    page = _capture(model, names, lambda: model(input_ids=ids, attention_mask=mask), tmp_path)
    for layer, name in enumerate(names):
        for b, idx in enumerate([5, 2]):
            weights = torch.from_numpy(page[idx][name]["attention"]["weights"])
            torch.testing.assert_close(weights, reference[layer][b], rtol=0, atol=1e-6)
    assert (torch.from_numpy(page[2][names[0]]["attention"]["weights"])[..., 6:] == 0).all()  # padding gets nothing
