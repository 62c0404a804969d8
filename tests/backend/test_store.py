"""LogStore on hand-made logs in the plain reference layout: discovery, scores, page index, datapoint records."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eval_viewer.backend import LogStore
from eval_viewer.errors import LogDirError, NotFoundError
from eval_viewer.log_format import DEBUGGER_DIR, VALIDATION_SCORES, Kind, epoch_dir_name

N = 12


def _assert_same(actual: Any, expected: Any) -> None:
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray) and actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, dict):
        assert set(actual) == set(expected)
        for key in expected:
            _assert_same(actual[key], expected[key])
    else:
        assert actual == expected


def _record_as_outputs(record: Any) -> dict[str, Any]:
    """The record turned back into the page layout, to compare with what was written."""
    out: dict[str, Any] = {
        "recorder": {
            "inputs": {i.key: i.value for i in record.inputs},
            "labels": {i.key: i.value for i in record.labels},
            "outputs": {i.key: i.value for i in record.predictions},
            "meta_info": dict(record.meta_info),
        }
    }
    for name, items in record.debug.items():
        out[name] = items[0].value if len(items) == 1 and items[0].key == "" else {i.key: i.value for i in items}
    return out


def test_discovers_runs_epochs_and_debug(make_store: Callable[..., LogStore], trainer_run: Path,
                                         evaluator_run: Path) -> None:
    store = make_store(trainer_run.parent)
    runs = {r.name: r for r in store.runs()}
    assert set(runs) == {"trainer", "group/evaluator"}
    trainer = runs["trainer"]
    assert trainer.kind == "trainer"
    assert [(e.epoch, e.has_debug) for e in trainer.epochs] == [(0, True), (2, False), (10, True)]
    evaluator = runs["group/evaluator"]
    assert evaluator.kind == "evaluator" and [(e.epoch, e.has_debug) for e in evaluator.epochs] == [(None, True)]
    assert store.run("group/evaluator") == evaluator
    with pytest.raises(NotFoundError, match="No run named 'nope'"):
        store.run("nope")
    with pytest.raises(NotFoundError, match="no epoch 5"):
        store.scores("trainer", 5)


def test_a_log_dir_that_is_a_run_is_named_by_its_folder(make_store: Callable[..., LogStore], trainer_run: Path,
                                                        evaluator_run: Path) -> None:
    store = make_store(trainer_run, evaluator_run)
    assert [r.name for r in store.runs()] == ["trainer", "evaluator"]


def test_names_are_unique_and_url_safe_across_log_dirs(make_store: Callable[..., LogStore], tmp_path: Path,
                                                       trainer_run: Path) -> None:
    other = tmp_path / "other logs"
    shutil.copytree(trainer_run, other / "trainer")
    shutil.copytree(trainer_run, other / "a run#1")
    store = make_store(trainer_run.parent, other)
    names = [r.name for r in store.runs()]
    assert names == ["trainer", "a%20run%231", "other%20logs/trainer"]
    assert store.run("a%20run%231").path == other / "a run#1"
    assert names == [r.name for r in store.runs()]  # stable across rescans


def test_log_dir_errors(make_store: Callable[..., LogStore], tmp_path: Path) -> None:
    with pytest.raises(LogDirError, match="does not exist"):
        make_store(tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(LogDirError, match="no run found"):
        make_store(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LogDirError, match="is a file"):
        make_store(tmp_path / "file")


def test_new_epochs_and_runs_appear_without_restart(make_store: Callable[..., LogStore], trainer_run: Path,
                                                    scores_writer: Callable[..., Path]) -> None:
    store = make_store(trainer_run.parent)
    scores_writer(trainer_run / epoch_dir_name(11) / VALIDATION_SCORES, epoch=11)
    assert [e.epoch for e in store.run("trainer").epochs][-1] == 10  # cached until the next listing...
    assert store.scores("trainer", 11).num_datapoints == N  # ...but asking for it finds it
    scores_writer(trainer_run.parent / "late" / "epoch_0" / VALIDATION_SCORES)
    assert [e.epoch for e in store.run("trainer").epochs] == [0, 2, 10, 11]
    assert "late" in {r.name for r in store.runs()}


def test_scores_per_class_nan_and_reload_on_change(make_store: Callable[..., LogStore], trainer_run: Path,
                                                   scores_writer: Callable[..., Path]) -> None:
    store = make_store(trainer_run)
    s = store.scores("trainer", 2)
    assert s.metrics == ("accuracy", "loss", "iou[0]", "iou[1]", "iou[2]")
    assert math.isnan(s.per_datapoint["accuracy"][1]) and s.ranking("accuracy")[0] == 1
    assert s.higher_is_better["loss"] is False and s.ranking("loss")[0] == 1
    assert store.scores("trainer", 2) is s  # cached
    time.sleep(0.01)
    scores_writer(trainer_run / epoch_dir_name(2) / VALIDATION_SCORES, n=N, epoch=7)
    assert store.scores("trainer", 2) is not s  # the file changed: re-read


def test_metric_history_has_nan_where_missing(make_store: Callable[..., LogStore], trainer_run: Path) -> None:
    path = trainer_run / epoch_dir_name(2) / VALIDATION_SCORES
    payload = json.loads(path.read_text())
    del payload["aggregated"]["loss"]
    path.write_text(json.dumps(payload))
    (trainer_run / epoch_dir_name(11)).mkdir()
    (trainer_run / epoch_dir_name(11) / VALIDATION_SCORES).write_text("{broken")
    store = make_store(trainer_run)
    history = store.metric_history("trainer", "loss")
    assert [e for e, _ in history] == [0, 2, 10, 11]
    assert history[0][1] == pytest.approx(0.5) and history[2][1] == pytest.approx(0.4)
    assert math.isnan(history[1][1]) and math.isnan(history[3][1])
    assert store.metric_history("trainer", "iou[2]")[0] == (0, pytest.approx(0.3))
    with pytest.raises(NotFoundError):
        store.metric_history("trainer", "nope")


def test_datapoint_returns_exactly_what_was_written(make_store: Callable[..., LogStore], trainer_run: Path,
                                                    outputs_of: Callable[..., dict[str, Any]]) -> None:
    store = make_store(trainer_run)
    for epoch, idx in [(0, 0), (0, 11), (10, 4), (10, 5), (10, 11)]:
        record = store.datapoint("trainer", epoch, idx)
        assert record.problems == ()
        assert (record.run, record.epoch, record.idx) == ("trainer", epoch, idx)
        _assert_same(_record_as_outputs(record), outputs_of(idx, epoch))
        s = store.scores("trainer", epoch)
        assert record.scores.keys() == set(s.metrics)
        assert record.scores["iou[1]"] == s.per_datapoint["iou[1]"][idx]
    record = store.datapoint("trainer", 0, 3)
    assert [(i.key, i.kind) for i in record.inputs] == [("image", Kind.IMAGE)]
    assert [(i.key, i.kind) for i in record.labels] == [("mask", Kind.MASK)]
    assert [(i.key, i.kind) for i in record.predictions] == [("mask", Kind.MASK), ("logits", Kind.SERIES)]
    assert [(i.key, i.kind) for i in record.debug["layer4"]] == [
        ("feature_map", Kind.FEATURE_MAP), ("stats", Kind.STATS), ("layer_name", Kind.TEXT)]
    assert [(i.key, i.kind) for i in record.debug["gradcam"]] == [("", Kind.HEATMAP)]
    assert list(record.debug) == ["layer4", "gradcam"]


def test_epoch_without_debug_has_scores_only(make_store: Callable[..., LogStore], trainer_run: Path) -> None:
    store = make_store(trainer_run)
    record = store.datapoint("trainer", 2, 7)
    assert record.debug == {} and record.inputs == () and record.problems == ()
    assert record.scores["accuracy"] == store.scores("trainer", 2).per_datapoint["accuracy"][7]
    assert store.meta_table("trainer", 2) == {}
    assert store.debug_status("trainer", 2) is None
    with pytest.raises(NotFoundError, match="no datapoint 12"):
        store.datapoint("trainer", 2, N)


def test_evaluator_run_with_writer_index_tags_and_meta(make_store: Callable[..., LogStore], evaluator_run: Path,
                                                       outputs_of: Callable[..., dict[str, Any]]) -> None:
    store = make_store(evaluator_run)
    status = store.debug_status("evaluator", None)
    assert status is not None and status.ready and status.datapoints == N and status.pages == 3
    record = store.datapoint("evaluator", None, 9)
    _assert_same(_record_as_outputs(record), outputs_of(9, None))
    assert dict((i.key, i.kind) for i in record.debug["layer4"])["layer_name"] == Kind.TEXT
    table = store.meta_table("evaluator", None)
    assert table == {"name": [f"img_{i:03d}.png" for i in range(N)], "weight": [i / 2 for i in range(N)]}


def test_index_built_once_and_cached_outside_the_log_dir(make_store: Callable[..., LogStore], trainer_run: Path,
                                                         tmp_path: Path) -> None:
    before = sorted(p.relative_to(trainer_run) for p in trainer_run.rglob("*"))
    store = make_store(trainer_run)
    assert store.wait_for_index("trainer", 10, timeout=20)
    table = store.meta_table("trainer", 10)
    assert table["name"][4] == "img_004.png" and table["idx"] == list(range(N))
    assert sorted(p.relative_to(trainer_run) for p in trainer_run.rglob("*")) == before  # nothing written there
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    store.close()
    again = make_store(trainer_run)  # a new process: the index comes from the cache, no page is opened
    status = again.debug_status("trainer", 10)
    assert status is not None and status.ready and status.datapoints == N
    assert again.meta_table("trainer", 10) == table


def test_rank_sharded_pages_merge_by_index(make_store: Callable[..., LogStore], tmp_path: Path,
                                           pages_writer: Callable[..., Any], scores_writer: Callable[..., Path],
                                           outputs_of: Callable[..., dict[str, Any]]) -> None:
    run = tmp_path / "ddp"
    scores_writer(run / "epoch_0" / VALIDATION_SCORES)
    debug = run / "epoch_0" / DEBUGGER_DIR
    pages_writer(debug, [0, 2, 4, 6, 8, 10, 0], per_page=3, rank=0, with_index=True)  # 0 twice: DDP padding
    pages_writer(debug, [1, 3, 5, 7, 9, 11], per_page=4, rank=1)  # no index: scanned
    store = make_store(run)
    for idx in range(N):
        _assert_same(_record_as_outputs(store.datapoint("ddp", 0, idx)), outputs_of(idx, 0))
    status = store.debug_status("ddp", 0)
    assert status is not None and status.datapoints == N and status.pages == 5


def test_cache_is_bounded_in_bytes(make_store: Callable[..., LogStore], trainer_run: Path) -> None:
    store = make_store(trainer_run, cache_bytes=64 * 1024)
    for idx in range(N):
        store.datapoint("trainer", 10, idx)
    assert store._lru.bytes <= 64 * 1024  # noqa: SLF001 - the bound is the point of this test


def test_skeletons_let_a_new_process_read_without_parsing_pages(
        make_store: Callable[..., LogStore], trainer_run: Path, tmp_path: Path,
        outputs_of: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(trainer_run)
    assert store.wait_for_index("trainer", 10, timeout=20)
    store.close()  # waits for the background work, skeletons included
    skeleton_files = sorted((tmp_path / "cache" / "skeletons").glob("*.skel"))
    assert len(skeleton_files) == 3  # the 3 pages of epoch 10 (epoch 0 was never opened)

    import eval_viewer.backend.pages as pages

    def no_parsing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a page was parsed although its skeletons are cached")

    monkeypatch.setattr(pages, "parse_page", no_parsing)
    fresh = make_store(trainer_run)
    for idx in (0, 6, 11):
        record = fresh.datapoint("trainer", 10, idx)
        assert record.problems == ()
        _assert_same(_record_as_outputs(record), outputs_of(idx, 10))
    monkeypatch.undo()

    for path in skeleton_files:  # a damaged cache is ignored: the page is parsed instead
        path.write_bytes(b"garbage")
    damaged = make_store(trainer_run)
    _assert_same(_record_as_outputs(damaged.datapoint("trainer", 10, 7)), outputs_of(7, 10))
