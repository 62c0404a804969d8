"""SequentialDebugger end to end: a real model, real hooks, pages written in tmp_path and read back with joblib."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch

from eval_viewer.debuggers import BaseDebugger, ForwardDebugger, SequentialDebugger
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import DEBUGGER_DIR, checkpoint_epochs, epoch_dir_name, index_name, page_name


class TinyNet(torch.nn.Module):
    """Two convs and a head: enough layers to hook, small enough that a test runs in milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, padding=1)
        )
        self.head = torch.nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))


class FeatureMap(ForwardDebugger):
    """Keeps the layer output and counts how often its hook ran."""

    def __init__(self, layer_name: str) -> None:
        super().__init__(layer_name)
        self.hook_calls = 0

    def process_forward(self, module: torch.nn.Module, input: Any, output: Any) -> Any:
        self.hook_calls += 1
        return {"feature_map": output.detach(), "layer_name": self.layer_name}


class InputRecorder(BaseDebugger):
    """Keeps the inputs and the model's outputs of the batch, plus a per-batch scalar."""

    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> Any:
        inputs = datapoint["inputs"]
        return {"inputs": inputs, "outputs": datapoint["outputs"], "batch_mean": inputs.mean()}


def config(*entries: tuple[str, type, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": n, "debugger_config": {"class": c, "args": a}} for n, c, a in entries]


@pytest.fixture
def model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


CFG = config(
    ("conv1", FeatureMap, {"layer_name": "backbone.0"}),
    ("conv2", FeatureMap, {"layer_name": "backbone.2"}),
    ("record", InputRecorder, {}),
)


def batches(n_datapoints: int, batch_size: int, idx_as: str = "tensor") -> Iterator[dict[str, Any]]:
    """Deterministic synthetic batches whose inputs are a function of the datapoint idx."""
    for start in range(0, n_datapoints, batch_size):
        ids = list(range(start, min(start + batch_size, n_datapoints)))
        ramp = torch.linspace(0, 1, 108).reshape(3, 6, 6)
        inputs = torch.stack([torch.full((3, 6, 6), float(i)) + ramp for i in ids])
        idx: Any = {"tensor": torch.tensor(ids), "list": ids, "int": ids[0]}[idx_as]
        yield {"inputs": inputs, "labels": None, "meta_info": {"idx": idx, "name": [f"dp{i}" for i in ids]}}


def run_epoch(debugger: SequentialDebugger, model: TinyNet, n: int, batch_size: int, idx_as: str = "tensor") -> None:
    with torch.no_grad():
        for batch in batches(n, batch_size, idx_as):
            batch["outputs"] = model(batch["inputs"])
            debugger(batch, model)


def load_all(paths: list[Path]) -> dict[int, dict[str, Any]]:
    merged: dict[int, dict[str, Any]] = {}
    for path in paths:
        page = joblib.load(path)
        assert not merged.keys() & page.keys(), "a datapoint is in two pages"
        merged.update(page)
    return merged


@pytest.fixture
def debugger(model: TinyNet, tmp_path: Path) -> Iterator[SequentialDebugger]:
    with SequentialDebugger(CFG, model, page_size_mb=8 / 1024, staging_dir=tmp_path) as dbg:
        yield dbg


@pytest.mark.parametrize(("batch_size", "idx_as"), [(5, "tensor"), (4, "list"), (1, "int"), (1, "tensor")])
def test_batches_are_split_into_datapoints_matching_a_per_datapoint_run(
    model: TinyNet, tmp_path: Path, batch_size: int, idx_as: str
) -> None:
    with SequentialDebugger(CFG, model, page_size_mb=8 / 1024) as dbg:
        dbg.start_epoch(tmp_path)
        run_epoch(dbg, model, 13, batch_size, idx_as)
        paths = dbg.save_all()
    captured = load_all(paths)
    assert sorted(captured) == list(range(13))
    model.requires_grad_(False)
    for single in batches(13, 1):  # the reference: one datapoint at a time, outputs taken straight from the model
        (i,) = single["meta_info"]["idx"].tolist()
        x = single["inputs"]
        conv1 = model.backbone[0](x)
        dp = captured[i]
        assert set(dp) == {"conv1", "conv2", "record"}
        assert isinstance(dp["conv1"]["feature_map"], np.ndarray)
        assert dp["conv1"]["feature_map"].shape == (4, 6, 6)
        np.testing.assert_allclose(dp["conv1"]["feature_map"], conv1[0].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            dp["conv2"]["feature_map"], model.backbone(x)[0].numpy(), rtol=1e-5, atol=1e-5
        )
        assert dp["conv2"]["layer_name"] == "backbone.2"
        np.testing.assert_array_equal(dp["record"]["inputs"], x[0].numpy())
        assert dp["record"]["outputs"].shape == (2,)
        assert isinstance(dp["record"]["batch_mean"], float)  # a 0-d tensor becomes a Python scalar


def test_pages_split_at_the_size_limit_and_hold_every_datapoint_once(
    debugger: SequentialDebugger, model: TinyNet, tmp_path: Path
) -> None:
    debugger.enabled = True
    debugger.reset_buffer()
    run_epoch(debugger, model, 40, 6)
    out = tmp_path / "epoch_0" / DEBUGGER_DIR
    paths = debugger.save_all(out)
    # One datapoint: 4*36*4 + 6*36*4 + 3*36*4 bytes of arrays + 2 floats + strings and keys, about 1.9 KiB.
    limit = 8 * 1024
    assert len(paths) > 5
    captured = load_all(paths)
    assert sorted(captured) == list(range(40))
    for path in paths:
        assert path.parent == out
        assert path.stat().st_size <= limit + 2048
    index = json.loads((out / index_name()).read_text())
    assert sorted(i for info in index["pages"].values() for i in info["indices"]) == list(range(40))
    assert index["debuggers"]["conv1"]["class"].endswith(".FeatureMap")
    assert index["meta"]["17"] == {"name": "dp17"}
    assert debugger.stats.pages == len(paths)


def test_reference_flow_never_writes_into_another_epochs_folder(
    debugger: SequentialDebugger, model: TinyNet, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    total = 5
    captured_epochs = checkpoint_epochs(2, total)
    snapshots: dict[int, dict[str, bytes]] = {}
    for epoch in range(total):
        debugger.enabled = epoch in captured_epochs
        if debugger.enabled:
            debugger.reset_buffer()
        run_epoch(debugger, model, 20 + epoch, 4)  # a different datapoint count per epoch tells them apart
        if debugger.enabled:
            out = run / epoch_dir_name(epoch) / DEBUGGER_DIR
            debugger.save_all(out)
            snapshots[epoch] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(p.name for p in run.iterdir()) == [epoch_dir_name(e) for e in captured_epochs]
    for epoch, files in snapshots.items():
        out = run / epoch_dir_name(epoch) / DEBUGGER_DIR
        assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # untouched by later epochs
        pages = [out / name for name in files if name.startswith("page_")]
        assert sorted(load_all(pages)) == list(range(20 + epoch))
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # staging folders are gone


def test_hooks_exist_only_while_enabled(debugger: SequentialDebugger, model: TinyNet) -> None:
    conv1 = debugger.debuggers["conv1"]
    assert isinstance(conv1, FeatureMap)
    assert not model.backbone[0]._forward_hooks and not model.backbone[2]._forward_hooks
    run_epoch(debugger, model, 8, 4)
    assert conv1.hook_calls == 0
    assert debugger(next(batches(2, 2)), model) == {}
    debugger.enabled = True
    assert len(model.backbone[0]._forward_hooks) == 2  # the debugger's, and the one noting the order layers ran in
    model(torch.zeros(1, 3, 6, 6))
    debugger.enabled = False
    assert not model.backbone[0]._forward_hooks and conv1.last_capture is None
    model(torch.zeros(1, 3, 6, 6))
    assert conv1.hook_calls == 1


def test_a_failing_writer_raises_from_save_all_and_the_next_call(model: TinyNet, tmp_path: Path) -> None:
    out = tmp_path / DEBUGGER_DIR
    (out / page_name(0)).mkdir(parents=True)  # the first page cannot be renamed into place
    (out / page_name(0) / "x").write_text("in the way")
    with SequentialDebugger(CFG, model, page_size_mb=8 / 1024) as dbg:
        dbg.start_epoch(out)
        with pytest.raises(CaptureError, match=r"page_0\.pkl"):
            for _ in range(100):  # the error reaches the eval loop at the latest on a later call
                run_epoch(dbg, model, 10, 5)
        with pytest.raises(CaptureError, match=r"could not write debug page .*page_0\.pkl"):
            dbg.save_all()
        dbg.start_epoch(tmp_path / "retry")  # the writer thread survived
        run_epoch(dbg, model, 10, 5)
        assert sorted(load_all(dbg.save_all())) == list(range(10))


def test_rank_sharded_names_and_bf16(model: TinyNet, tmp_path: Path) -> None:
    class Half(InputRecorder):
        def __call__(self, datapoint: Any, model: torch.nn.Module) -> Any:
            return {"x": datapoint["inputs"].to(torch.bfloat16), "h": datapoint["inputs"].half()}

    with SequentialDebugger(config(("half", Half, {})), model, rank=3) as dbg:
        dbg.start_epoch(tmp_path)
        run_epoch(dbg, model, 3, 3)
        paths = dbg.save_all()
    assert [p.name for p in paths] == ["page_rank3_0.pkl"]
    assert (tmp_path / "index_rank3.json").exists() and not (tmp_path / "index.json").exists()
    dp = joblib.load(paths[0])[2]["half"]
    assert dp["x"].dtype == np.float32 and dp["h"].dtype == np.float16 and dp["x"].shape == (3, 6, 6)


def test_config_errors_fail_at_construction(model: TinyNet) -> None:
    with pytest.raises(CaptureError, match="duplicate debugger name 'a'"):
        SequentialDebugger(config(("a", InputRecorder, {}), ("a", InputRecorder, {})), model)
    with pytest.raises(CaptureError, match=r"'typo'.*backbone\.3.*Did you mean"):
        SequentialDebugger(config(("typo", FeatureMap, {"layer_name": "backbone.3"})), model)
    with pytest.raises(CaptureError, match=r"debuggers_config\[0\].*unexpected keyword"):
        SequentialDebugger(config(("a", FeatureMap, {"layer": "x"})), model)
    with pytest.raises(CaptureError, match="not a BaseDebugger"):
        SequentialDebugger(config(("a", dict, {})), model)
    with pytest.raises(CaptureError, match="debugger_config"):
        SequentialDebugger([{"name": "a"}], model)


def test_bad_datapoints_and_outputs_get_clear_errors(debugger: SequentialDebugger, model: TinyNet) -> None:
    debugger.enabled = True
    with pytest.raises(CaptureError, match=r'meta_info\["idx"\]'):
        debugger({"inputs": torch.zeros(1, 3, 6, 6), "outputs": torch.zeros(1, 2)}, model)

    class Bad(InputRecorder):
        def __call__(self, datapoint: Any, model: torch.nn.Module) -> Any:
            return {"fine": 1, "model": model}

    with SequentialDebugger(config(("bad", Bad, {})), model) as dbg:
        dbg.enabled = True
        with pytest.raises(CaptureError, match=r"debugger 'bad' returned a .*TinyNet at model"):
            dbg(next(batches(1, 1)), model)


class Rerun(BaseDebugger):
    """Like GradCAM: runs the model again (here on other inputs), which fires every forward hook again."""

    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> Any:
        return {"rerun": model(datapoint["inputs"] * -3.0)}


def test_a_debugger_that_reruns_the_model_does_not_change_forward_captures(model: TinyNet) -> None:
    cfg = config(("rerun", Rerun, {}), ("conv1", FeatureMap, {"layer_name": "backbone.0"}))
    with SequentialDebugger(cfg, model) as debugger:
        debugger.enabled = True
        for batch in batches(4, 2):
            batch["outputs"] = model(batch["inputs"])
            out = debugger(batch, model)
            assert debugger.debuggers["conv1"].last_capture is None  # the re-capture is not handed out later
            assert list(out) == ["rerun", "conv1"]  # config order kept
            expected = model.backbone[0](batch["inputs"])
            torch.testing.assert_close(out["conv1"]["feature_map"], expected)
        debugger.enabled = False
