"""The backend on logs written by our own capture code: what SequentialDebugger wrote is what LogStore returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eval_viewer.backend import LogStore, PassKey
from eval_viewer.debuggers import ForwardDebugger, SequentialDebugger
from eval_viewer.debuggers.builtins import DatapointRecorder
from eval_viewer.log_format import DEBUGGER_DIR, VALIDATION_SCORES, Kind, epoch_dir_name, write_scores

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


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 3, 12, 12, generator=g), torch.randint(0, 3, (N, 12, 12), generator=g)


def _write_run(run: Path, capture_epochs: tuple[int, ...], epochs: int = 3) -> dict[int, dict[str, Any]]:
    """Validate ``epochs`` times (capturing some), return what the model produced per epoch for checking."""
    torch.manual_seed(0)
    model = Net().eval()
    images, masks = _data()
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


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict[str, Any]]]:
    run = tmp_path_factory.mktemp("capture") / "run"
    return run, _write_run(run, capture_epochs=(0, 2))


def test_runs_epochs_and_pages_of_our_writer(captured: tuple[Path, dict[int, Any]],
                                             make_store: Callable[..., LogStore]) -> None:
    run, _ = captured
    store = make_store(run)
    info = store.run("run")
    assert [(p.key, p.has_debug) for p in info.passes] == [
        (PassKey("run", "val", 0), True), (PassKey("run", "val", 1), False), (PassKey("run", "val", 2), True)]
    pages = list((run / "epoch_2" / DEBUGGER_DIR).glob("page_*.pkl"))
    assert len(pages) > 1  # the small page size split the epoch
    status = store.debug_status(("run", "val", 2))
    assert status is not None and status.ready and status.datapoints == N and status.pages == len(pages)
    assert not list((Path(store._cache_dir)).glob("*.json"))  # noqa: SLF001 - writer's index used, nothing scanned


def test_datapoint_read_returns_exactly_what_was_captured(captured: tuple[Path, dict[int, Any]],
                                                          make_store: Callable[..., LogStore]) -> None:
    run, expected = captured
    images, masks = _data()
    store = make_store(run)
    for epoch in (0, 2):
        for idx in (0, 7, N - 1):
            record = store.datapoint(("run", "val", epoch), idx)
            assert record.problems == ()
            assert record.scores["loss"] == pytest.approx(float(expected[epoch]["loss"][idx]))
            inputs = {i.key: i for i in record.inputs}
            np.testing.assert_array_equal(inputs["image"].value, images[idx].numpy())
            assert inputs["image"].kind == Kind.IMAGE
            labels = {i.key: i for i in record.labels}
            np.testing.assert_array_equal(labels["mask"].value, masks[idx].numpy())
            assert labels["mask"].kind == Kind.MASK
            preds = {i.key: i for i in record.predictions}
            np.testing.assert_allclose(preds["logits"].value, expected[epoch]["logits"][idx], rtol=1e-6, atol=1e-6)
            assert record.meta_info["name"] == f"s{idx}" and int(record.meta_info["idx"]) == idx
            features = {i.key: i for i in record.debug["features"]}
            assert features["fmap"].kind == Kind.FEATURE_MAP
            np.testing.assert_allclose(features["fmap"].value, expected[epoch]["fmap"][idx], rtol=1e-6, atol=1e-6)
            assert features["stats"].kind == Kind.STATS
            assert features["stats"].value["mean"] == pytest.approx(float(expected[epoch]["fmap"][idx].mean()),
                                                                    rel=1e-5)


def test_scores_meta_table_and_history(captured: tuple[Path, dict[int, Any]],
                                       make_store: Callable[..., LogStore]) -> None:
    run, expected = captured
    store = make_store(run)
    s = store.scores(("run", "val", 1))
    np.testing.assert_allclose(s.per_datapoint["loss"], expected[1]["loss"], rtol=1e-6)
    assert s.higher_is_better["loss"] is False
    assert s.ranking("loss")[0] == int(np.argmax(expected[1]["loss"]))
    history = store.metric_history("run", "loss")
    assert [k for k, _ in history] == [PassKey("run", "val", e) for e in (0, 1, 2)]
    assert history[1][1] == pytest.approx(float(expected[1]["loss"].mean()), rel=1e-6)
    table = store.meta_table(("run", "val", 2))
    assert table["name"] == [f"s{i}" for i in range(N)]


def test_an_epoch_captured_while_the_viewer_runs_appears(tmp_path: Path,
                                                         make_store: Callable[..., LogStore]) -> None:
    run = tmp_path / "live"
    _write_run(run, capture_epochs=(0,), epochs=1)
    store = make_store(run)
    assert store.run("live").steps("val") == (0,)
    assert store.datapoint(("live", "val", 0), 3).problems == ()
    time.sleep(0.01)
    _write_run(run, capture_epochs=(0, 1), epochs=2)  # training went on (and rewrote epoch 0)
    # Changed by design (issue 7): the new epoch appears with the next snapshot (store.refresh() here; the app's
    # background refresher every rescan_s), not on the next request.
    assert store.run("live").steps("val") == (0,)
    store.refresh()
    assert [(p.step, p.has_debug) for p in store.runs()[0].passes] == [(0, True), (1, True)]
    assert store.default_pass("live") == PassKey("live", "val", 1)
    assert store.datapoint(("live", "val", 1), 3).problems == ()
    assert store.datapoint(("live", "val", 0), 3).problems == ()


