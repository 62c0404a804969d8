"""Capture in the set-ups that used to go silently wrong: compiled models, DDP without rank=, repeated layer calls."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from eval_viewer.debuggers import AttentionDebugger, FeatureMapDebugger, LayerOutputDebugger, SequentialDebugger
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import index_name, page_name

REPO = Path(__file__).resolve().parents[2]


def _entry(name: str, cls: type, **args: Any) -> dict[str, Any]:
    return {"name": name, "debugger_config": {"class": cls, "args": args}}


def _pages(folder: Path) -> dict[int, dict[str, Any]]:
    page: dict[int, dict[str, Any]] = {}
    for path in sorted(folder.glob("page_*.pkl")):
        page.update(joblib.load(path))
    return page


class Attention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def qk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qk(x)
        return x + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)


class Refiner(nn.Module):
    """One block applied ``steps`` times per forward (recurrent refinement / tied weights)."""

    def __init__(self, steps: int = 3) -> None:
        super().__init__()
        self.steps = steps
        self.block = Attention()
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.steps):
            x = self.block(x)
        return self.head(x.mean(dim=1))


def _explicit(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def _per_step_inputs(model: Refiner, x: torch.Tensor) -> list[torch.Tensor]:
    inputs = []
    with torch.no_grad():
        for _ in range(model.steps):
            inputs.append(x)
            x = model.block(x)
    return inputs


def test_every_call_of_a_repeated_layer_is_kept_in_order(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Refiner().eval()
    x = torch.randn(2, 9, 16)
    steps = _per_step_inputs(model, x)
    entries = [
        _entry("attn", AttentionDebugger, layer_name="block", max_tokens=None, infer_grid=False),
        _entry("out", LayerOutputDebugger, layer_name="block"),
        _entry("first", LayerOutputDebugger, layer_name="block", calls="first"),
        _entry("last", LayerOutputDebugger, layer_name="block", calls="last"),
        _entry("fmap", FeatureMapDebugger, layer_name="block"),  # 9 tokens laid on a 3x3 grid
        _entry("attn_last", AttentionDebugger, layer_name="block", max_tokens=None, infer_grid=False, calls="last"),
    ]
    with SequentialDebugger(entries, model) as debugger:
        debugger.start_epoch(tmp_path)
        with torch.no_grad():
            model(x * 5)  # an earlier forward pass: none of its calls may mix into the next batch's capture
            model(x)
            debugger({"meta_info": {"idx": [4, 9]}}, model)
        debugger.save_all()
    page = _pages(tmp_path)
    index = json.loads((tmp_path / index_name()).read_text())
    with torch.no_grad():
        for b, idx in enumerate([4, 9]):
            for step, inp in enumerate(steps):
                key = "" if step == 0 else f"_{step}"
                q, k, _ = model.block.qk(inp)
                attention = page[idx]["attn"][f"attention{key}"]
                assert attention["module_call"] == step
                torch.testing.assert_close(torch.from_numpy(attention["weights"]), _explicit(q, k)[b], rtol=0, atol=1e-6)
                torch.testing.assert_close(torch.from_numpy(page[idx]["out"][f"output{key}"]), model.block(inp)[b])
            assert "output_1" not in page[idx]["first"] and "output_1" not in page[idx]["last"]
            assert page[idx]["attn_last"].keys() == {"attention", "stats"}
            assert page[idx]["attn_last"]["attention"]["module_call"] == len(steps) - 1
            np.testing.assert_array_equal(page[idx]["attn_last"]["attention"]["weights"],
                                          page[idx]["attn"][f"attention_{len(steps) - 1}"]["weights"])
            torch.testing.assert_close(torch.from_numpy(page[idx]["first"]["output"]), model.block(steps[0])[b])
            torch.testing.assert_close(torch.from_numpy(page[idx]["last"]["output"]), model.block(steps[-1])[b])
    assert page[4]["attn"].keys() == {"attention", "stats", "attention_1", "stats_1", "attention_2", "stats_2"}
    kinds = index["debuggers"]["fmap"]["kinds"]
    assert kinds == {f"{key}{suffix}": kind for suffix in ("", "_1", "_2")
                     for key, kind in (("feature_map", "feature_map"), ("stats", "stats"))}
    assert set(index["debuggers"]["attn"]["kinds"]) == {"attention", "stats", "attention_1", "stats_1", "attention_2",
                                                        "stats_2"}


def test_calls_must_be_all_first_or_last() -> None:
    with pytest.raises(CaptureError, match="calls must be"):
        FeatureMapDebugger("x", calls="every")  # type: ignore[arg-type]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Attention()
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.proj(self.block(x)).mean(dim=1))


def test_a_model_compiled_and_run_before_capture_is_captured_correctly(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(1)
    model = Net().eval()
    compiled = torch.compile(model, backend="eager")  # Dynamo's tracing (what drops late hooks), no C++ compile
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        compiled(x)  # traced without hooks
    entries = [_entry("attn", AttentionDebugger, layer_name="block", max_tokens=None, infer_grid=False),
               _entry("proj", LayerOutputDebugger, layer_name="proj")]
    with caplog.at_level(logging.WARNING), SequentialDebugger(entries, model) as debugger:
        debugger.start_epoch(tmp_path)
        with torch.no_grad():
            out = compiled(x)
            debugger({"meta_info": {"idx": [0, 1]}}, model)
        debugger.save_all()
    assert "torch.compiler.reset()" in caplog.text
    page = _pages(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))
        q, k, _ = model.block.qk(x)
        for b in range(2):
            torch.testing.assert_close(torch.from_numpy(page[b]["attn"]["attention"]["weights"]), _explicit(q, k)[b],
                                       rtol=0, atol=1e-6)
            torch.testing.assert_close(torch.from_numpy(page[b]["proj"]["output"]), model.proj(model.block(x))[b])


def test_a_batch_in_which_no_hook_fired_is_an_error_not_a_page_of_none(tmp_path: Path) -> None:
    model = Net().eval()
    with SequentialDebugger([_entry("proj", LayerOutputDebugger, layer_name="proj")], model) as debugger:
        debugger.start_epoch(tmp_path)
        with pytest.raises(CaptureError, match="no capture hook fired.*torch.compile"):
            debugger({"meta_info": {"idx": [0, 1]}}, model)  # the model never ran


_DDP_WORKER = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
    from eval_viewer.debuggers import LayerOutputDebugger, SequentialDebugger

    out, port, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)).eval()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    data = TensorDataset(torch.arange(11.0)[:, None].repeat(1, 4), torch.arange(11))
    loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, shuffle=False))
    entries = [{"name": "hidden", "debugger_config": {"class": LayerOutputDebugger, "args": {"layer_name": "0"}}}]
    debugger = SequentialDebugger(entries, model)  # no rank=: the README's own snippet
    debugger.start_epoch(out)
    with torch.no_grad():
        for x, idx in loader:
            ddp(x)
            debugger({"inputs": x, "meta_info": {"idx": idx}}, model)
    debugger.save_all()
    dist.barrier()
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_ddp_without_rank_writes_rank_sharded_pages_and_loses_nothing(tmp_path: Path) -> None:
    port = str(_free_port())
    workers = [_python(_DDP_WORKER, str(tmp_path), port, str(rank)) for rank in (0, 1)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert index_name(0) in names and index_name(1) in names and page_name(0) not in names
    assert page_name(0, rank=0) in names and page_name(0, rank=1) in names
    page = _pages(tmp_path)
    assert sorted(page) == list(range(11))
    torch.manual_seed(0)
    layer = nn.Linear(4, 5)
    with torch.no_grad():
        for idx, value in page.items():
            torch.testing.assert_close(torch.from_numpy(value["hidden"]["output"]), layer(torch.full((4,), float(idx))))


_PLAIN_WORKER = textwrap.dedent(
    """
    import sys, torch
    from eval_viewer.debuggers import LayerOutputDebugger, SequentialDebugger
    from eval_viewer.errors import CaptureError

    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    entries = [{"name": "o", "debugger_config": {"class": LayerOutputDebugger, "args": {"layer_name": "0"}}}]
    with SequentialDebugger(entries, model) as debugger:
        debugger.start_epoch(sys.argv[1])
        with torch.no_grad():
            model(torch.zeros(1, 4))
            debugger({"meta_info": {"idx": [100]}}, model)
        try:
            debugger.save_all()
        except CaptureError as exc:
            print(exc)
            sys.exit(3)
    """
)


def test_two_live_processes_writing_one_folder_under_one_rank_is_an_error(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    with SequentialDebugger([_entry("o", LayerOutputDebugger, layer_name="0")], model) as debugger:
        debugger.start_epoch(tmp_path)
        with torch.no_grad():
            model(torch.zeros(2, 4))
            debugger({"meta_info": {"idx": [0, 1]}}, model)
        debugger.save_all()
    other = _python(_PLAIN_WORKER, str(tmp_path))  # this process is alive and holds the folder
    out, err = other.communicate(timeout=120)
    assert other.returncode == 3, err
    assert "another process" in out and "rank=" in out
    assert sorted(_pages(tmp_path)) == [0, 1]  # nothing of ours was overwritten or removed
    other = _python(_PLAIN_WORKER, str(tmp_path / "elsewhere"))  # its own folder: fine
    assert other.wait(timeout=120) == 0


def test_attention_debugger_on_a_module_without_attention_keeps_an_empty_entry(tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    model = Net().eval()
    with caplog.at_level(logging.WARNING), SequentialDebugger(
        [_entry("a", AttentionDebugger, layer_name="proj")], model
    ) as debugger:
        debugger.start_epoch(tmp_path)
        with torch.no_grad():
            model(torch.randn(2, 9, 16))
            assert debugger({"meta_info": {"idx": [0, 1]}}, model) == {"a": {}}
        debugger.save_all()
    assert "saw no scaled_dot_product_attention" in caplog.text
