"""LogStore on hand-made logs in the plain reference layout: runs and passes, scores, page index, datapoint records."""

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

from eval_viewer.backend import LogStore, PassKey
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
    assert [(p.key, p.has_scores, p.has_debug) for p in trainer.passes] == [
        (PassKey("trainer", "val", 0), True, True), (PassKey("trainer", "val", 2), True, False),
        (PassKey("trainer", "val", 10), True, True)]
    assert trainer.splits == ("val",) and trainer.steps("val") == (0, 2, 10)
    assert [p.label for p in trainer.passes] == ["epoch 0", "epoch 2", "epoch 10"]
    assert trainer.default_pass.key == store.default_pass("trainer") == PassKey("trainer", "val", 10)
    assert trainer.location == str(trainer_run)
    evaluator = runs["group/evaluator"]
    assert evaluator.kind == "evaluator"
    assert [(p.key, p.has_debug, p.label) for p in evaluator.passes] == [
        (PassKey("group/evaluator", "test", None), True, "test")]
    assert store.default_pass("group/evaluator") == PassKey("group/evaluator", "test", None)
    assert store.run("group/evaluator") == evaluator
    assert store.pass_info(("group/evaluator", "test")) == evaluator.passes[0]  # a 2-tuple is a pass without step
    with pytest.raises(NotFoundError, match="No run named 'nope'"):
        store.run("nope")
    with pytest.raises(NotFoundError, match=r"has no pass val step 5 \(passes: epoch 0, epoch 2, epoch 10\)"):
        store.scores(("trainer", "val", 5))
    with pytest.raises(NotFoundError, match="has no pass test"):
        store.scores(("trainer", "test", None))


def test_a_log_dir_that_is_a_run_is_named_by_its_folder(make_store: Callable[..., LogStore], trainer_run: Path,
                                                        evaluator_run: Path) -> None:
    store = make_store(trainer_run, evaluator_run)
    # runs() is sorted by name now (it was in --log-dir order): one order for every listing of the snapshot
    assert [r.name for r in store.runs()] == ["evaluator", "trainer"]
    assert store.run("trainer").location == str(trainer_run) and store.run("evaluator").location == str(evaluator_run)


def test_names_are_unique_and_url_safe_across_log_dirs(make_store: Callable[..., LogStore], tmp_path: Path,
                                                       trainer_run: Path) -> None:
    other = tmp_path / "other logs"
    shutil.copytree(trainer_run, other / "trainer")
    shutil.copytree(trainer_run, other / "a run#1")
    store = make_store(trainer_run.parent, other)
    names = [r.name for r in store.runs()]
    assert names == ["a%20run%231", "other%20logs/trainer", "trainer"]  # sorted by name (was --log-dir order)
    assert store.run("trainer").location == str(trainer_run)  # the first log dir keeps the plain name
    assert store.run("other%20logs/trainer").location == str(other / "trainer")
    assert store.run("a%20run%231").location == str(other / "a run#1")
    store.refresh()
    assert names == [r.name for r in store.runs()]  # stable across snapshots
    assert store.run("a%20run%231").passes[0].key == PassKey("a%20run%231", "val", 0)


def test_log_dir_errors(make_store: Callable[..., LogStore], tmp_path: Path) -> None:
    with pytest.raises(LogDirError, match="does not exist"):
        make_store(tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(LogDirError, match="no run found"):
        make_store(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LogDirError, match="is a file"):
        make_store(tmp_path / "file")


def test_new_epochs_and_runs_appear_after_a_refresh(make_store: Callable[..., LogStore], trainer_run: Path,
                                                    scores_writer: Callable[..., Path]) -> None:
    store = make_store(trainer_run.parent)
    version = store.version
    scores_writer(trainer_run / epoch_dir_name(11) / VALIDATION_SCORES, epoch=11)
    # Changed by design (issue 7): no request lists the disk, so a new epoch is invisible, even asked for by its key,
    # until the next snapshot (store.refresh(), or the background refresher every rescan_s). It used to be found
    # by the request itself.
    assert store.run("trainer").steps("val")[-1] == 10
    with pytest.raises(NotFoundError, match="no pass val step 11"):
        store.scores(("trainer", "val", 11))
    assert store.version == version
    store.refresh()
    assert store.version != version
    assert store.scores(("trainer", "val", 11)).num_datapoints == N
    assert store.default_pass("trainer") == PassKey("trainer", "val", 11)
    scores_writer(trainer_run.parent / "late" / "epoch_0" / VALIDATION_SCORES)
    assert "late" not in {r.name for r in store.runs()}
    store.refresh()
    assert store.run("trainer").steps("val") == (0, 2, 10, 11)
    assert "late" in {r.name for r in store.runs()}


def test_scores_per_class_nan_and_reload_on_change(make_store: Callable[..., LogStore], trainer_run: Path,
                                                   scores_writer: Callable[..., Path]) -> None:
    store = make_store(trainer_run)
    key = PassKey("trainer", "val", 2)
    s = store.scores(key)
    assert s.metrics == ("accuracy", "loss", "iou[0]", "iou[1]", "iou[2]")
    assert math.isnan(s.per_datapoint["accuracy"][1]) and s.ranking("accuracy")[0] == 1
    assert s.higher_is_better["loss"] is False and s.ranking("loss")[0] == 1
    assert store.scores(key) is s  # cached
    assert store.scores(("trainer", "val", 2)) is s  # a plain tuple names the same pass
    time.sleep(0.01)
    scores_writer(trainer_run / epoch_dir_name(2) / VALIDATION_SCORES, n=N, epoch=7)
    # Changed by design (issue 7): a request does not stat the file; the change is seen by the next snapshot.
    assert store.scores(key) is s
    store.refresh()
    changed = store.scores(key)
    assert changed is not s  # the file changed: re-read
    assert changed.aggregated["accuracy"] == pytest.approx(0.57)


def test_metric_history_has_nan_where_missing(make_store: Callable[..., LogStore], trainer_run: Path) -> None:
    path = trainer_run / epoch_dir_name(2) / VALIDATION_SCORES
    payload = json.loads(path.read_text())
    del payload["aggregated"]["loss"]
    path.write_text(json.dumps(payload))
    (trainer_run / epoch_dir_name(11)).mkdir()
    (trainer_run / epoch_dir_name(11) / VALIDATION_SCORES).write_text("{broken")
    store = make_store(trainer_run)
    history = store.metric_history("trainer", "loss")
    assert [k for k, _ in history] == [PassKey("trainer", "val", e) for e in (0, 2, 10, 11)]
    assert history[0][1] == pytest.approx(0.5) and history[2][1] == pytest.approx(0.4)
    assert math.isnan(history[1][1]) and math.isnan(history[3][1])
    assert store.metric_history("trainer", "iou[2]")[0] == (PassKey("trainer", "val", 0), pytest.approx(0.3))
    assert store.metric_history("trainer", "loss", split="test") == []  # no test pass: nothing, not an error
    with pytest.raises(NotFoundError):
        store.metric_history("trainer", "nope")


def test_datapoint_returns_exactly_what_was_written(make_store: Callable[..., LogStore], trainer_run: Path,
                                                    outputs_of: Callable[..., dict[str, Any]]) -> None:
    store = make_store(trainer_run)
    for epoch, idx in [(0, 0), (0, 11), (10, 4), (10, 5), (10, 11)]:
        key = PassKey("trainer", "val", epoch)
        record = store.datapoint(key, idx)
        assert record.problems == ()
        assert (record.run, record.pass_key, record.idx) == ("trainer", key, idx)
        _assert_same(_record_as_outputs(record), outputs_of(idx, epoch))
        s = store.scores(key)
        assert record.scores.keys() == set(s.metrics)
        assert record.scores["iou[1]"] == s.per_datapoint["iou[1]"][idx]
    record = store.datapoint(("trainer", "val", 0), 3)
    assert [(i.key, i.kind) for i in record.inputs] == [("image", Kind.IMAGE)]
    assert [(i.key, i.kind) for i in record.labels] == [("mask", Kind.MASK)]
    assert [(i.key, i.kind) for i in record.predictions] == [("mask", Kind.MASK), ("logits", Kind.SERIES)]
    assert [(i.key, i.kind) for i in record.debug["layer4"]] == [
        ("feature_map", Kind.FEATURE_MAP), ("stats", Kind.STATS), ("layer_name", Kind.TEXT)]
    assert [(i.key, i.kind) for i in record.debug["gradcam"]] == [("", Kind.HEATMAP)]
    assert list(record.debug) == ["layer4", "gradcam"]
    assert record.debug_item("layer4", "feature_map") is record.debug["layer4"][0]
    assert record.debug_item("gradcam").kind == Kind.HEATMAP
    with pytest.raises(NotFoundError, match="no debugger 'nope' \\(debuggers: layer4, gradcam\\)"):
        record.debug_item("nope", "x")
    with pytest.raises(NotFoundError, match="debugger 'layer4' has no item 'nope'"):
        record.debug_item("layer4", "nope")
    assert [(section, name, item.key) for section, name, item in record.items()] == [
        ("inputs", "", "image"), ("labels", "", "mask"), ("predictions", "", "mask"), ("predictions", "", "logits"),
        ("debug", "layer4", "feature_map"), ("debug", "layer4", "stats"), ("debug", "layer4", "layer_name"),
        ("debug", "gradcam", "")]


def test_epoch_without_debug_has_scores_only(make_store: Callable[..., LogStore], trainer_run: Path) -> None:
    store = make_store(trainer_run)
    key = PassKey("trainer", "val", 2)
    record = store.datapoint(key, 7)
    assert record.debug == {} and record.inputs == () and record.problems == ()
    assert record.scores["accuracy"] == store.scores(key).per_datapoint["accuracy"][7]
    assert store.meta_table(key) == {}
    assert store.debug_status(key) is None
    assert store.wait_for_index(key, timeout=0)
    with pytest.raises(NotFoundError, match="no datapoint 12"):
        store.datapoint(key, N)


def test_evaluator_run_with_writer_index_tags_and_meta(make_store: Callable[..., LogStore], evaluator_run: Path,
                                                       outputs_of: Callable[..., dict[str, Any]]) -> None:
    store = make_store(evaluator_run)
    key = PassKey("evaluator", "test", None)
    status = store.debug_status(key)
    assert status is not None and status.ready and status.datapoints == N and status.pages == 3
    record = store.datapoint(key, 9)
    _assert_same(_record_as_outputs(record), outputs_of(9, None))
    assert dict((i.key, i.kind) for i in record.debug["layer4"])["layer_name"] == Kind.TEXT
    assert record.debug_item("layer4", "layer_name").kind == Kind.TEXT
    table = store.meta_table(("evaluator", "test"))
    assert table == {"name": [f"img_{i:03d}.png" for i in range(N)], "weight": [i / 2 for i in range(N)]}


def test_index_built_once_and_cached_outside_the_log_dir(make_store: Callable[..., LogStore], trainer_run: Path,
                                                         tmp_path: Path) -> None:
    before = sorted(p.relative_to(trainer_run) for p in trainer_run.rglob("*"))
    store = make_store(trainer_run)
    key = PassKey("trainer", "val", 10)
    assert store.wait_for_index(key, timeout=20)
    table = store.meta_table(key)
    assert table["name"][4] == "img_004.png" and table["idx"] == list(range(N))
    assert sorted(p.relative_to(trainer_run) for p in trainer_run.rglob("*")) == before  # nothing written there
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    store.close()
    again = make_store(trainer_run)  # a new process: the index comes from the cache, no page is opened
    status = again.debug_status(key)
    assert status is not None and status.ready and status.datapoints == N
    assert again.meta_table(key) == table


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
        _assert_same(_record_as_outputs(store.datapoint(("ddp", "val", 0), idx)), outputs_of(idx, 0))
    status = store.debug_status(("ddp", "val", 0))
    assert status is not None and status.datapoints == N and status.pages == 5


def test_cache_is_bounded_in_bytes(make_store: Callable[..., LogStore], trainer_run: Path) -> None:
    store = make_store(trainer_run, cache_bytes=64 * 1024)
    for idx in range(N):
        store.datapoint(("trainer", "val", 10), idx)
    assert store._lru.bytes <= 64 * 1024  # noqa: SLF001 - the bound is the point of this test


def test_skeletons_let_a_new_process_read_without_parsing_pages(
        make_store: Callable[..., LogStore], trainer_run: Path, tmp_path: Path,
        outputs_of: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(trainer_run)
    key = PassKey("trainer", "val", 10)
    assert store.wait_for_index(key, timeout=20)
    store.close()  # waits for the background work, skeletons included
    skeleton_files = sorted((tmp_path / "cache" / "skeletons").glob("*.skel"))
    assert len(skeleton_files) == 3  # the 3 pages of epoch 10 (epoch 0 was never opened)

    import eval_viewer.backend.pages as pages

    def no_parsing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a page was parsed although its skeletons are cached")

    monkeypatch.setattr(pages, "parse_page", no_parsing)
    fresh = make_store(trainer_run)
    for idx in (0, 6, 11):
        record = fresh.datapoint(key, idx)
        assert record.problems == ()
        _assert_same(_record_as_outputs(record), outputs_of(idx, 10))
    monkeypatch.undo()

    for path in skeleton_files:  # a damaged cache is ignored: the page is parsed instead
        path.write_bytes(b"garbage")
    damaged = make_store(trainer_run)
    _assert_same(_record_as_outputs(damaged.datapoint(key, 7)), outputs_of(7, 10))


def test_runs_are_found_down_to_max_depth_only(make_store: Callable[..., LogStore], tmp_path: Path,
                                               scores_writer: Callable[..., Path]) -> None:
    from eval_viewer.backend.snapshot import MAX_DEPTH

    logs = tmp_path / "deep"
    at_limit = logs.joinpath(*[f"d{i}" for i in range(1, MAX_DEPTH)], "run")  # MAX_DEPTH folders below the log dir
    beyond = logs.joinpath(*[f"d{i}" for i in range(1, MAX_DEPTH + 1)], "run")
    for run in (at_limit, beyond):
        scores_writer(run / "epoch_0" / VALIDATION_SCORES)
        scores_writer(run / "epoch_0" / "nested" / "epoch_0" / VALIDATION_SCORES)  # inside a run: never a run
    store = make_store(logs)
    assert [r.name for r in store.runs()] == ["/".join([*(f"d{i}" for i in range(1, MAX_DEPTH)), "run"])]
    assert store.runs()[0].steps("val") == (0,)
