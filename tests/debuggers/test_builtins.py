"""Forward-hook debuggers and the datapoint recorder on real tensors, split into datapoints like the writer does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from eval_viewer.debuggers.batching import split_batch, to_numpy
from eval_viewer.debuggers.builtins import (
    ActivationStatsDebugger,
    DatapointRecorder,
    FeatureMapDebugger,
    LayerOutputDebugger,
)
from eval_viewer.debuggers.builtins._tensors import downsample_spatial, per_datapoint_stats, square_grid
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import RECORD_SECTIONS, Kind


def _hooked(debugger, module: nn.Module, x: torch.Tensor):  # noqa: ANN001, ANN202
    handles = debugger.attach(module)
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return debugger(None, module)


def test_per_datapoint_stats_ignore_nonfinite_values_and_count_them() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, float("nan")], [-1.0, 0.0, 1.0, float("inf")]])
    stats = per_datapoint_stats(x)
    torch.testing.assert_close(stats["mean"], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(stats["std"], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(stats["min"], torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(stats["max"], torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(stats["nonfinite"], torch.tensor([1.0, 1.0]))


def test_downsample_averages_areas_and_keeps_the_longest_side_within_max_side() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(downsample_spatial(x, factor=2)[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    assert downsample_spatial(torch.zeros(2, 3, 100, 50), max_side=32).shape == (2, 3, 32, 16)
    assert downsample_spatial(torch.zeros(2, 7), max_side=2).shape == (2, 7)  # not spatial: untouched
    assert square_grid(197) == ((14, 14), 1) and square_grid(7) is None


def test_feature_maps_split_into_datapoints_with_their_own_stats() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    x = torch.randn(3, 3, 20, 10)
    debugger = FeatureMapDebugger("conv", max_channels=4, max_side=10, dtype=torch.float16)
    out = _hooked(debugger, conv, x)
    full = conv(x).detach()
    assert out["feature_map"].shape == (3, 4, 10, 5) and out["feature_map"].dtype == torch.float16
    assert out["original_shape"] == [6, 20, 10] and out["channels"] == [0, 1, 2, 3]
    parts = [to_numpy(p) for p in split_batch(out, 3)]
    for i, part in enumerate(parts):
        assert part["feature_map"].shape == (4, 10, 5)
        assert isinstance(part["stats"]["mean"], float)
        assert part["stats"]["mean"] == pytest.approx(float(full[i].mean()), abs=1e-5)
        assert part["stats"]["max"] == pytest.approx(float(full[i].max()), abs=1e-5)
    assert debugger.kinds() == {"feature_map": Kind.FEATURE_MAP, "stats": Kind.STATS}


def test_feature_maps_of_tokens_are_laid_on_their_grid() -> None:
    tokens = torch.randn(2, 1 + 16, 5)
    out = _hooked(FeatureMapDebugger("", max_channels=None, max_side=None), nn.Identity(), tokens)
    torch.testing.assert_close(out["feature_map"][1, :, 2, 3], tokens[1, 1 + 2 * 4 + 3])
    with pytest.raises(CaptureError, match="grid"):
        _hooked(FeatureMapDebugger(""), nn.Identity(), torch.randn(2, 7, 5))


def test_activation_stats_match_numpy_per_datapoint_and_per_channel() -> None:
    x = torch.randn(2, 4, 5, 5)
    x[0, 1] = 0.0
    out = _hooked(ActivationStatsDebugger("", saturation=1.0), nn.ReLU(), x)
    relu = np.maximum(x.numpy(), 0)
    for i in range(2):
        assert float(out["stats"]["sparsity"][i]) == pytest.approx(float((relu[i] == 0).mean()))
        assert float(out["stats"]["saturation_high"][i]) == pytest.approx(float((relu[i] >= 1).mean()))
        assert float(out["stats"]["l2_norm"][i]) == pytest.approx(float(np.linalg.norm(relu[i])), rel=1e-5)
        np.testing.assert_allclose(out["channel_mean"][i].numpy(), relu[i].mean(axis=(1, 2)), rtol=1e-5, atol=1e-7)
    assert float(out["channel_mean"][0, 1]) == 0.0


def test_layer_output_is_pooled_and_tagged_by_its_rank() -> None:
    x = torch.randn(2, 3, 8, 8)
    debugger = LayerOutputDebugger("", downsample_factor=2)
    out = _hooked(debugger, nn.Identity(), x)
    assert out["output"].shape == (2, 3, 4, 4) and out["downsample_factor"] == 2
    torch.testing.assert_close(out["output"][1, 2, 0, 0], x[1, 2, :2, :2].mean())
    assert debugger.kinds() == {"output": Kind.FEATURE_MAP}
    logits = _hooked(LayerOutputDebugger("", downsample_factor=4, kind=Kind.SERIES), nn.Identity(), torch.randn(2, 10))
    assert logits["output"].shape == (2, 10) and logits["downsample_factor"] == 1
    with pytest.raises(CaptureError):
        LayerOutputDebugger("", kind="picture")


def test_recorder_keeps_a_shrunk_record_per_datapoint_and_infers_kinds() -> None:
    torch.manual_seed(1)
    batch = {
        "inputs": {"image": torch.rand(2, 3, 64, 32)},
        "labels": {"mask": torch.randint(0, 4, (2, 64, 32))},
        "outputs": torch.randn(2, 4, 64, 32),
        "meta_info": {"idx": torch.tensor([7, 3]), "shapes": ["circle", "square,triangle"], "split": "val"},
    }
    recorder = DatapointRecorder(max_side=16, probabilities=True)
    record = recorder(batch, nn.Identity())
    assert set(record) == set(RECORD_SECTIONS)
    assert record["inputs"]["image"].shape == (2, 3, 16, 8) and record["inputs"]["image"].dtype == torch.uint8
    assert record["labels"]["mask"].shape == (2, 16, 8) and record["labels"]["mask"].dtype == torch.uint8
    predicted = batch["outputs"].argmax(dim=1)
    torch.testing.assert_close(record["outputs"]["mask"].long(), predicted[:, 2::4, 2::4])  # nearest-exact: pixel centres
    assert record["outputs"]["probabilities"].shape == (2, 4, 16, 8)
    parts = [to_numpy(p) for p in split_batch(record, 2)]
    assert parts[1]["meta_info"] == {"idx": 3, "shapes": "square,triangle", "split": "val"}
    assert parts[0]["inputs"]["image"].shape == (3, 16, 8)
    np.testing.assert_array_equal(parts[0]["labels"]["mask"], record["labels"]["mask"][0].numpy())
    kinds = recorder.kinds()
    assert kinds["inputs.image"] == Kind.IMAGE and kinds["labels.mask"] == Kind.MASK
    assert kinds["outputs.mask"] == Kind.MASK and kinds["meta_info.shapes"] == Kind.TEXT


def test_recorder_classification_and_user_kinds() -> None:
    logits = torch.randn(3, 5)
    batch = {"inputs": torch.randn(3, 3, 8, 8), "outputs": {"cls": logits}, "meta_info": {"idx": [0, 1, 2]}}
    recorder = DatapointRecorder(kinds={"inputs.image": Kind.FEATURE_MAP}, compact=False)
    record = recorder(batch, nn.Identity())
    assert record["outputs"]["cls_class"].tolist() == logits.argmax(dim=1).tolist()
    assert torch.equal(record["inputs"]["image"], batch["inputs"])  # compact=False, small enough: exact
    assert recorder.kinds()["inputs.image"] == Kind.FEATURE_MAP
    with pytest.raises(CaptureError):
        DatapointRecorder(kinds={"inputs.image": "photo"})
