"""Capture never changes the model: PyTorch's fused transformer fast paths and nested tensors, inference mode."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import joblib
import pytest
import torch
import torch.nn as nn

from eval_viewer.debuggers import AttentionDebugger, GradCAMDebugger, SequentialDebugger
from eval_viewer.errors import CaptureError

pytestmark = pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")  # torch's own note


class Classifier(nn.Module):
    """A padded-sequence classifier on nn.TransformerEncoder: eval + no_grad + padding mask = nested fast path."""

    def __init__(self, dim: int = 16, heads: int = 4, layers: int = 2, norm_first: bool = False) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=32, batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=not norm_first)
        self.head = nn.Linear(dim, 3)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(inputs["x"], src_key_padding_mask=inputs["pad"]).mean(dim=1))


def _batch(lengths: list[int], dim: int = 16) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    longest = max(lengths)
    pad = torch.arange(longest)[None, :] >= torch.tensor(lengths)[:, None]
    return {"x": torch.randn(len(lengths), longest, dim), "pad": pad}


def _run(model: nn.Module, layer_name: str, inputs: dict[str, torch.Tensor], out: Path) -> tuple[Any, dict]:
    entries = [{"name": "a", "debugger_config": {"class": AttentionDebugger,
                                                 "args": {"layer_name": layer_name, "max_tokens": None}}}]
    with SequentialDebugger(entries, model) as debugger:
        debugger.start_epoch(out)
        with torch.no_grad():
            encoded = model.encoder(inputs["x"], src_key_padding_mask=inputs["pad"])
            debugger({"meta_info": {"idx": [0, 1, 2]}}, model)
        debugger.save_all()
    page: dict[int, Any] = {}
    for path in out.glob("page_*.pkl"):
        page.update(joblib.load(path))
    return encoded, page


def _alone(model: Classifier, x: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's per-head attention for one unpadded sequence, from MHA's own weights output (slow path)."""
    maps = []
    with torch.no_grad():
        for layer in model.encoder.layers:
            h = layer.norm1(x) if layer.norm_first else x
            _, weights = layer.self_attn(h, h, h, need_weights=True, average_attn_weights=False)
            maps.append(weights[0])
            x = layer(x)
    return maps


@pytest.mark.parametrize("watched", ["encoder", "encoder.layers.1"])
def test_encoder_with_padding_mask_keeps_its_nested_fast_path_and_outputs_to_the_bit(
    watched: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = Classifier().eval()
    inputs = _batch([5, 9, 7])
    with torch.no_grad():
        expected = model.encoder(inputs["x"], src_key_padding_mask=inputs["pad"])
    assert (expected[0, 5:] == 0).all()  # the nested fast path: padded positions come back as zeros
    with caplog.at_level(logging.WARNING):
        encoded, page = _run(model, watched, inputs, tmp_path)
    # the encoder's layers are replayed by a hook on the encoder itself: the "no attention" check must come after
    assert "saw no scaled_dot_product_attention" not in caplog.text
    assert torch.equal(encoded, expected)  # capture on == capture off, to the bit
    layers = [0, 1] if watched == "encoder" else [1]
    for b, length in enumerate([5, 9, 7]):
        reference = _alone(model, inputs["x"][b : b + 1, :length])
        for call, layer in enumerate(layers):
            attention = page[b]["a"]["attention" + (f"_{call}" if call else "")]
            assert attention["module_call"] == 0  # both layers belong to the encoder's first (and only) call
            weights = torch.from_numpy(attention["weights"])
            assert weights.shape == (4, 9, 9)
            torch.testing.assert_close(weights[:, :length, :length], reference[layer], rtol=0, atol=2e-6)
            assert (weights[:, :length, length:] == 0).all()  # padded keys get nothing


def test_a_block_around_a_transformer_layer_keeps_the_layers_fast_path(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = Classifier(layers=1, norm_first=True).eval()  # norm_first: no nested tensor, the layer's fused kernel
    inputs = _batch([6, 6, 4])
    with torch.no_grad():
        expected = model.encoder(inputs["x"], src_key_padding_mask=inputs["pad"])
    encoded, page = _run(model, "", inputs, tmp_path)  # the whole model, a custom module
    assert torch.equal(encoded, expected)
    reference = _alone(model, inputs["x"][2:3, :4])[0]
    torch.testing.assert_close(torch.from_numpy(page[2]["a"]["attention"]["weights"])[:, :4, :4], reference,
                               rtol=0, atol=2e-6)


class Segmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)))


def test_gradcam_under_inference_mode_equals_gradcam_under_no_grad() -> None:
    torch.manual_seed(3)
    model = Segmenter().eval()
    debugger = GradCAMDebugger("features", target_class=1, pixels="all")
    images = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        expected = debugger({"inputs": images}, model)
    with torch.inference_mode():
        frozen = images.clone()  # an inference tensor, as a DataLoader batch is under inference_mode
        result = debugger({"inputs": frozen}, model)
    torch.testing.assert_close(result["gradcam"], expected["gradcam"], rtol=0, atol=0)
    assert float(result["gradcam"].max()) == 1.0


class Cached(Segmenter):
    """Keeps a tensor made on its first call: under inference_mode that is an inference tensor autograd cannot use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "scale"):
            self.scale = torch.ones(1, 4, 1, 1) * 2
        return self.head(torch.relu(self.features(x)) * self.scale)


def test_gradcam_with_inference_tensors_inside_the_model_says_what_to_do() -> None:
    model = Cached().eval()
    with torch.inference_mode():
        model(torch.rand(1, 3, 8, 8))
        with pytest.raises(CaptureError, match=r"torch\.no_grad\(\) instead of torch\.inference_mode\(\)"):
            GradCAMDebugger("features", target_class=0)({"inputs": torch.rand(1, 3, 8, 8)}, model)


@pytest.mark.parametrize("watched", ["encoder.layers.0", "encoder.layers.0.self_attn"])
def test_watching_one_layer_of_a_nested_encoder_works_on_its_nested_input(watched: str, tmp_path: Path) -> None:
    """A hook on a layer makes PyTorch take that layer's slow path (on the nested tensor the encoder made): the
    outputs agree to rounding (the fused kernel is replaced), padded positions stay zero, the maps are exact."""
    torch.manual_seed(4)
    model = Classifier().eval()
    inputs = _batch([5, 9, 7])
    with torch.no_grad():
        expected = model.encoder(inputs["x"], src_key_padding_mask=inputs["pad"])
    encoded, page = _run(model, watched, inputs, tmp_path)
    torch.testing.assert_close(encoded, expected, rtol=0, atol=1e-5)
    assert (encoded[0, 5:] == 0).all()
    for b, length in enumerate([5, 9, 7]):
        reference = _alone(model, inputs["x"][b : b + 1, :length])[0]
        weights = torch.from_numpy(page[b]["a"]["attention"]["weights"])
        torch.testing.assert_close(weights[:, :length, :length], reference, rtol=0, atol=2e-6)
