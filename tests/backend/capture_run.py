"""A run written by our own capture code (SequentialDebugger with a datapoint recorder and a user's forward debugger),
shared by the backend tests that check what the capture wrote is what the store returns, locally and remotely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from eval_viewer.debuggers import ForwardDebugger, SequentialDebugger
from eval_viewer.debuggers.builtins import DatapointRecorder
from eval_viewer.log_format import DEBUGGER_DIR, VALIDATION_SCORES, Kind, epoch_dir_name, write_scores

__all__ = ["N", "BATCH", "Net", "Features", "data", "write_run"]

N = 20
BATCH = 6


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class Features(ForwardDebugger):
    """A user's forward debugger: the layer's map (tagged) and its stats (left to inference)."""

    def process_forward(self, module: torch.nn.Module, input: Any, output: Any) -> Any:
        return {"fmap": output.detach(), "stats": {"mean": output.mean(dim=(1, 2, 3))}}

    def kinds(self) -> dict[str, str]:
        return {"fmap": Kind.FEATURE_MAP}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 3, 12, 12, generator=g), torch.randint(0, 3, (N, 12, 12), generator=g)


def write_run(run: Path, capture_epochs: tuple[int, ...], epochs: int = 3) -> dict[int, dict[str, Any]]:
    """Validate ``epochs`` times (capturing some), return what the model produced per epoch for checking."""
    torch.manual_seed(0)
    model = Net().eval()
    images, masks = data()
    config = [
        {"name": "record", "debugger_config": {"class": DatapointRecorder,
                                               "args": {"max_side": None, "compact": False, "predictions": "raw"}}},
        {"name": "features", "debugger_config": {"class": Features, "args": {"layer_name": "backbone.0"}}},
    ]
    expected: dict[int, dict[str, Any]] = {}
    with SequentialDebugger(config, model, page_size_mb=0.02) as debugger, torch.no_grad():
        for epoch in range(epochs):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01)
            debugger.enabled = epoch in capture_epochs
            if debugger.enabled:
                debugger.reset_buffer()
            losses = []
            for start in range(0, N, BATCH):
                idx = list(range(start, min(start + BATCH, N)))
                batch = {"inputs": {"image": images[idx]}, "labels": {"mask": masks[idx]},
                         "meta_info": {"idx": torch.tensor(idx), "name": [f"s{i}" for i in idx]}}
                batch["outputs"] = {"logits": model(batch["inputs"]["image"])}
                debugger(batch, model)
                losses.append(torch.nn.functional.cross_entropy(batch["outputs"]["logits"], masks[idx],
                                                                reduction="none").mean(dim=(1, 2)))
            loss = torch.cat(losses)
            epoch_dir = run / epoch_dir_name(epoch)
            write_scores(epoch_dir / VALIDATION_SCORES, {"loss": loss.mean()}, {"loss": loss})
            if debugger.enabled:
                debugger.save_all(epoch_dir / DEBUGGER_DIR)
            expected[epoch] = {"loss": loss.numpy(), "fmap": model.backbone[0](images).numpy(),
                               "logits": model(images).numpy()}
    return expected
