"""The Lightning callback inside a real ``lightning.Trainer`` (Lightning is an optional extra, in the dev extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from eval_viewer import demo
from eval_viewer import log_format as lf
from eval_viewer.debuggers import SequentialDebugger
from eval_viewer.debuggers.builtins import AttentionDebugger, DatapointRecorder

pl = pytest.importorskip("lightning.pytorch")


class Segmenter(pl.LightningModule):
    """The demo's tiny segmenter as a LightningModule: validation_step returns the outputs for the callback."""

    def __init__(self) -> None:
        super().__init__()
        self.net = demo.TinySegNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self(batch["inputs"]), batch["labels"]["mask"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self(batch["inputs"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_callback_writes_scores_every_epoch_and_pages_on_capture_epochs(tmp_path: Path) -> None:
    from eval_viewer.debuggers.lightning import EvalViewerCallback

    torch.manual_seed(0)
    module = Segmenter()
    config = [
        {"name": "record", "debugger_config": {"class": DatapointRecorder, "args": {}}},
        {"name": "attention", "debugger_config": {"class": AttentionDebugger, "args": {"layer_name": "net.attention"}}},
    ]
    val_set = demo.ShapesDataset(6, seed=3)
    with SequentialDebugger(config, module) as debugger:
        callback = EvalViewerCallback(demo.segmentation_metrics, debugger, run_dir=tmp_path, checkpoint_method="latest")
        trainer = pl.Trainer(
            max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[callback], limit_train_batches=2, default_root_dir=tmp_path,
        )
        trainer.fit(module, DataLoader(demo.ShapesDataset(8, seed=1), batch_size=4),
                    DataLoader(val_set, batch_size=4))
        assert not debugger.enabled  # hooks are gone after the capture epoch

    for epoch in (0, 1):
        scores = json.loads((tmp_path / lf.epoch_dir_name(epoch) / lf.VALIDATION_SCORES).read_text())
        assert len(scores["per_datapoint"]["miou"]) == len(val_set)  # the sanity check wrote nothing extra
    assert not (tmp_path / "epoch_0" / lf.DEBUGGER_DIR).exists()  # "latest": only the last epoch captures
    pages = sorted((tmp_path / "epoch_1" / lf.DEBUGGER_DIR).glob("page_*.pkl"))
    merged: dict[int, Any] = {}
    for page in pages:
        merged.update(joblib.load(page))
    assert sorted(merged) == list(range(len(val_set)))
    assert set(merged[0]) == {"record", "attention"}
    weights = merged[0]["attention"]["attention"]["weights"]
    assert abs(float(weights.sum(axis=-1).mean()) - 1.0) < 1e-4
