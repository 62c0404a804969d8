"""Runs with planted problems, written by our own capture code (a tiny real torch model and SequentialDebugger), for
the health-check tests (backend and browser).

The model: ``aux`` (conv + a ReLU whose bias makes it dead) on the input, then ``backbone`` (``stem`` conv, ``layer2``
conv, ``layer3`` conv that is forced to NaN on :data:`POISONED` datapoints, ``layer4`` conv) and ``attn`` (three heads
over the 4 x 4 grid: head 0 forced one-hot by its mask, head 1 forced uniform by a zero query, head 2 left alone).
Epoch 1 multiplies ``layer4``'s weights by :data:`JUMP` (a scale jump). ``healthy=True`` plants nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eval_viewer.debuggers import SequentialDebugger
from eval_viewer.debuggers.builtins import ActivationStatsDebugger, AttentionDebugger, DatapointRecorder, \
    FeatureMapDebugger
from eval_viewer.log_format import DEBUGGER_DIR, VALIDATION_SCORES, epoch_dir_name, write_scores

__all__ = ["N", "POISONED", "JUMP", "HealthNet", "write_health_run"]

N = 16
BATCH = 4
POISONED = (2, 5, 11)
JUMP = 100.0
HEADS, DIM = 3, 12


class Poisonable(nn.Module):
    """A conv whose output is NaN on the datapoints ``poison`` marks (set by the model for each batch)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.poison: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.poison is not None:
            y = torch.where(self.poison[:, None, None, None], torch.full_like(y, float("nan")), y)
        return y


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, planted: bool) -> None:
        super().__init__()
        self.heads, self.planted = heads, planted
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = F.layer_norm(x.flatten(2).transpose(1, 2), (c,))
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q = q * 25.0  # trained heads focus: an untrained one at the default scale would be near uniform
        mask = None
        if self.planted:
            q = torch.cat([q[:, :1], torch.zeros_like(q[:, 1:2]), q[:, 2:]], dim=1)  # head 1: uniform
            mask = torch.zeros(b, self.heads, h * w, h * w)
            mask[:, 0, :, 1:] = float("-inf")  # head 0: every query on key 0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)


class HealthNet(nn.Module):
    def __init__(self, healthy: bool = False) -> None:
        super().__init__()
        self.healthy = healthy
        self.aux = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.backbone = nn.Sequential(OrderedDict(
            stem=nn.Conv2d(3, DIM, 3, padding=1), layer2=nn.Conv2d(DIM, DIM, 3, padding=1), layer3=Poisonable(DIM),
            layer4=nn.Conv2d(DIM, DIM, 3, stride=2, padding=1)))
        self.attn = Attention(DIM, HEADS, planted=not healthy)
        self.head = nn.Conv2d(DIM, 3, 1)
        if not healthy:
            with torch.no_grad():
                self.aux[0].bias.fill_(-1e4)  # a ReLU that never fires

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        aux = self.aux(x)
        if not self.healthy:
            self.backbone.layer3.poison = torch.isin(idx, torch.tensor(POISONED))
        y = self.attn(self.backbone(x))
        return F.interpolate(self.head(y), size=x.shape[-2:]) + aux.mean() * 0


def _entry(name: str, cls: type, **args: object) -> dict[str, object]:
    return {"name": name, "debugger_config": {"class": cls, "args": args}}


def write_health_run(run: Path, healthy: bool = False, epochs: int = 2) -> None:
    """Validate ``epochs`` times capturing every epoch; epoch 1 (unless healthy) has layer4's weights x JUMP."""
    torch.manual_seed(0)
    model = HealthNet(healthy).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(N, 3, 8, 8, generator=g)
    masks = torch.randint(0, 3, (N, 8, 8), generator=g)
    config = [
        _entry("record", DatapointRecorder, max_side=None),
        # listed out of forward order on purpose: the index must say the order the layers ran in
        _entry("layer4", FeatureMapDebugger, layer_name="backbone.layer4", max_channels=None, max_side=None),
        _entry("layer3", FeatureMapDebugger, layer_name="backbone.layer3", max_channels=None, max_side=None),
        _entry("stem", FeatureMapDebugger, layer_name="backbone.stem", max_channels=None, max_side=None),
        _entry("layer2", FeatureMapDebugger, layer_name="backbone.layer2", max_channels=None, max_side=None),
        _entry("aux_relu", ActivationStatsDebugger, layer_name="aux.1"),
        _entry("attention", AttentionDebugger, layer_name="attn", max_tokens=64),
    ]
    with SequentialDebugger(config, model, page_size_mb=0.05) as debugger, torch.no_grad():
        for epoch in range(epochs):
            if epoch == 1 and not healthy:
                model.backbone.layer4.weight.mul_(JUMP)
                model.backbone.layer4.bias.mul_(JUMP)
            debugger.start_epoch(run / epoch_dir_name(epoch) / DEBUGGER_DIR)
            losses = []
            for start in range(0, N, BATCH):
                idx = torch.arange(start, min(start + BATCH, N))
                batch = {"inputs": {"image": images[idx]}, "labels": {"mask": masks[idx]},
                         "meta_info": {"idx": idx}}
                logits = model(images[idx], idx)
                batch["outputs"] = {"mask": logits.argmax(1)}
                debugger(batch, model)
                losses.append(F.cross_entropy(logits, masks[idx], reduction="none").mean(dim=(1, 2)))
            loss = torch.nan_to_num(torch.cat(losses), nan=10.0)
            write_scores(run / epoch_dir_name(epoch) / VALIDATION_SCORES, {"loss": loss.mean()}, {"loss": loss})
            debugger.save_all()
            debugger.enabled = False
