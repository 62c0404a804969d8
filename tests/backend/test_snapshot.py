"""Passes and the listing snapshot: a trainer's val epochs and final test pass, no disk walk per request, refreshes,
and no request waiting for an index."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.sources import LocalSource
from eval_viewer.errors import LogDirError, NotFoundError
from eval_viewer.log_format import DEBUGGER_DIR, EVALUATION_SCORES, VALIDATION_SCORES, epoch_dir_name

N = 12


@pytest.fixture
def trainer_with_test(tmp_path: Path, scores_writer: Callable[..., Path],
                      pages_writer: Callable[..., Any]) -> Path:
    """logs/trainer: val epochs 0 and 1 (pages in 1), a final evaluation_scores.json with its own pages, and an
    epoch 2 that has pages but no scores yet (its validation is still running)."""
    run = tmp_path / "logs" / "trainer"
    for epoch in (0, 1):
        scores_writer(run / epoch_dir_name(epoch) / VALIDATION_SCORES, epoch=epoch)
    pages_writer(run / epoch_dir_name(1) / DEBUGGER_DIR, range(N), per_page=6, epoch=1, with_index=True)
    pages_writer(run / epoch_dir_name(2) / DEBUGGER_DIR, range(N), per_page=6, epoch=2, with_index=True)
    scores_writer(run / EVALUATION_SCORES, epoch=50)
    pages_writer(run / DEBUGGER_DIR, range(N), per_page=4, epoch=None, with_index=True)
    return run


def test_a_trainer_with_a_final_evaluation_lists_both_kinds_of_passes(
        make_store: Callable[..., LogStore], trainer_with_test: Path, outputs_of: Callable[..., Any]) -> None:
    store = make_store(trainer_with_test.parent)
    run = store.run("trainer")
    assert run.kind == "trainer"
    assert [(p.key, p.has_scores, p.has_debug, p.label) for p in run.passes] == [
        (PassKey("trainer", "val", 0), True, False, "epoch 0"),
        (PassKey("trainer", "val", 1), True, True, "epoch 1"),
        (PassKey("trainer", "val", 2), False, True, "epoch 2"),
        (PassKey("trainer", "test", None), True, True, "test"),
    ]
    assert run.splits == ("val", "test")
    assert run.steps("val") == (0, 1, 2) and run.steps("test") == (None,)
    # The default is the latest *validated* epoch: not the test pass (issue 7), nor epoch 2 (pages, no scores yet).
    assert run.default_pass.key == store.default_pass("trainer") == PassKey("trainer", "val", 1)
    test = run.find("test")
    assert test.location == str(trainer_with_test) and store.pass_info(("trainer", "test")) == test
    assert run.find("val", 1).location == str(trainer_with_test / epoch_dir_name(1))

    # each pass reads its own files
    assert store.scores(("trainer", "test", None)).aggregated["accuracy"] == pytest.approx(1.0)
    assert store.scores(("trainer", "val", 1)).aggregated["accuracy"] == pytest.approx(0.51)
    assert store.metric_history("trainer", "accuracy", split="test") == [(test.key, pytest.approx(1.0))]
    assert [k for k, _ in store.metric_history("trainer", "accuracy")] == [
        PassKey("trainer", "val", 0), PassKey("trainer", "val", 1)]
    gradcam = outputs_of(3, None)["gradcam"]
    record = store.datapoint(test.key, 3)
    assert record.pass_key == test.key and record.problems == ()
    assert (record.debug_item("gradcam").value == gradcam).all()
    record = store.datapoint(("trainer", "val", 1), 3)
    assert (record.debug_item("gradcam").value == outputs_of(3, 1)["gradcam"]).all()
    # the test pass's count is not compared with the val epochs' (another split: other data)
    assert store.scores(test.key).problems == ()
    with pytest.raises(NotFoundError, match="no pass val step 3"):
        store.run("trainer").find("val", 3)


def test_a_run_with_only_unscored_epochs_opens_on_its_first_pass(
        make_store: Callable[..., LogStore], tmp_path: Path, pages_writer: Callable[..., Any]) -> None:
    run = tmp_path / "pending"
    pages_writer(run / epoch_dir_name(0) / DEBUGGER_DIR, range(N), per_page=N, with_index=True)
    store = make_store(run)
    assert store.default_pass("pending") == PassKey("pending", "val", 0)


class _ListingSpy:
    """Counts every listing of a folder under ``root``: ``os.scandir``/``os.listdir`` and ``Source.list`` calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.root = str(root)
        self.calls: list[str] = []
        real_scandir, real_listdir, real_list = os.scandir, os.listdir, LocalSource.list

        def scandir(path: Any = ".") -> Any:
            self._note("os.scandir", path)
            return real_scandir(path)

        def listdir(path: Any = ".") -> Any:
            self._note("os.listdir", path)
            return real_listdir(path)

        def source_list(source: LocalSource, rel: str) -> Any:
            self.calls.append(f"LocalSource.list({rel!r})")
            return real_list(source, rel)

        monkeypatch.setattr(os, "scandir", scandir)
        monkeypatch.setattr(os, "listdir", listdir)
        monkeypatch.setattr(LocalSource, "list", source_list)

    def _note(self, what: str, path: Any) -> None:
        text = os.fsdecode(path) if not isinstance(path, int) else str(path)
        if os.path.abspath(text).startswith(self.root):
            self.calls.append(f"{what}({text})")


def test_requests_never_list_the_disk_and_a_refresh_finds_new_passes(
        make_store: Callable[..., LogStore], trainer_with_test: Path, evaluator_run: Path,
        scores_writer: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    logs = trainer_with_test.parent
    spy = _ListingSpy(monkeypatch, logs)
    store = make_store(logs)
    assert spy.calls  # taking the snapshot is where the listing happens
    spy.calls.clear()
    keys = [p.key for r in store.runs() for p in r.passes]
    assert len(keys) == 5
    for _ in range(30):  # what the app does on arrow presses and selections, cold and warm
        for run in store.runs():
            store.run(run.name)
            store.default_pass(run.name)
            store.metric_history(run.name, "accuracy", split=run.default_pass.split)
        for key in keys:
            store.pass_info(key)
            store.debug_status(key)
            store.meta_table(key)
            if store.pass_info(key).has_scores:
                store.scores(key).ranking("accuracy")
            record = store.datapoint(key, 5)
            assert all("still indexing" not in p for p in record.problems)
    assert store.wait_background(timeout=20)
    assert spy.calls == [], spy.calls[:5]
    version = store.version

    scores_writer(trainer_with_test / epoch_dir_name(3) / VALIDATION_SCORES, epoch=3)
    scores_writer(logs / "late" / EVALUATION_SCORES)
    assert store.run("trainer").steps("val") == (0, 1, 2)  # not seen by requests...
    assert spy.calls == []
    store.refresh()  # ...but by the next snapshot
    assert spy.calls
    assert store.version != version
    assert store.run("trainer").steps("val") == (0, 1, 2, 3)
    assert store.default_pass("trainer") == PassKey("trainer", "val", 3)
    assert store.scores(("trainer", "val", 3)).num_datapoints == N
    assert store.default_pass("late") == PassKey("late", "test", None)
    before = store.version
    spy.calls.clear()
    store.refresh()  # lists again, but nothing changed: the same version
    assert spy.calls and store.version == before == store.snapshot.version


def test_the_background_refresher_renews_the_snapshot(make_store: Callable[..., LogStore], trainer_run: Path,
                                                      scores_writer: Callable[..., Path]) -> None:
    store = make_store(trainer_run, rescan_s=0.05)
    scores_writer(trainer_run / epoch_dir_name(11) / VALIDATION_SCORES, epoch=11)
    deadline = time.monotonic() + 10
    while store.run("trainer").steps("val")[-1] != 11 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.run("trainer").steps("val") == (0, 2, 10, 11)
    assert store.scores(("trainer", "val", 11)).num_datapoints == N


def test_refresh_without_waiting_asks_the_background_thread(make_store: Callable[..., LogStore], trainer_run: Path,
                                                            scores_writer: Callable[..., Path]) -> None:
    store = make_store(trainer_run, rescan_s=3600.0)  # the timer alone would not fire during the test
    scores_writer(trainer_run / epoch_dir_name(12) / VALIDATION_SCORES, epoch=12)
    store.refresh(wait=False)
    deadline = time.monotonic() + 10
    while 12 not in store.run("trainer").steps("val") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.run("trainer").steps("val") == (0, 2, 10, 12)


@pytest.fixture
def slow_indexing(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Background page scans block until the returned event is set."""
    import eval_viewer.backend.index as index

    release = threading.Event()
    real = index.parse_page

    def parse_page(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(index, "parse_page", parse_page)
    try:
        yield release
    finally:
        release.set()


def test_no_request_waits_for_an_index(make_store: Callable[..., LogStore], trainer_run: Path,
                                       slow_indexing: threading.Event, outputs_of: Callable[..., Any]) -> None:
    store = make_store(trainer_run, index_wait_s=0.0)  # the store's default: the app never waits
    key = PassKey("trainer", "val", 10)  # 3 pages and no index.json: scanned in the background
    # the indexer is held until ``slow_indexing`` is set below: any call that waited for it would never return
    record = store.datapoint(key, 4)
    status = store.debug_status(key)
    table = store.meta_table(key)
    assert record.debug == {} and record.scores  # the scores are there at once
    assert any("still indexing pages (0/3)" in p and "datapoint 4" in p for p in record.problems), record.problems
    assert status is not None and not status.ready and status.pages == 3 and status.pages_indexed == 0
    assert table == {}
    assert not store.wait_for_index(key, timeout=0.05)
    slow_indexing.set()
    assert store.wait_for_index(key, timeout=20)
    record = store.datapoint(key, 4)
    assert record.problems == ()
    assert (record.debug_item("gradcam").value == outputs_of(4, 10)["gradcam"]).all()
    assert store.meta_table(key)["name"][4] == "img_004.png"


def test_a_store_that_cannot_open_leaves_no_background_thread(tmp_path: Path, trainer_run: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    before = set(threading.enumerate())
    with pytest.raises(LogDirError, match="no run found"):
        LogStore([trainer_run, tmp_path / "empty"], cache_dir=tmp_path / "cache", rescan_s=0.01)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        started = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        if not started:
            break
        time.sleep(0.02)
    assert started == []  # a notebook's failed open must not keep listing the disk every rescan_s
