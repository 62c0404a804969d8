"""The backend on logs written by our own capture code: what SequentialDebugger wrote is what LogStore returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from capture_run import N
from capture_run import data as _data
from capture_run import write_run as _write_run

from eval_viewer.backend import LogStore, PassKey
from eval_viewer.log_format import DEBUGGER_DIR, Kind


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


