"""A run still being written: an index that lags its pages, pages that land while the viewer reads, and views that
say so and never outlive the files they were drawn from."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import joblib

from backend_logs import N, datapoint_outputs, scores_payload, write_json, write_pages
from eval_viewer.backend import LogStore
from eval_viewer.backend.index import DebugIndex
from eval_viewer.backend.snapshot import take_snapshot
from eval_viewer.backend.sources import LocalSource
from eval_viewer.log_format import DEBUGGER_DIR, EVALUATION_SCORES, VALIDATION_SCORES, epoch_dir_name, is_index_name


LAG_N = 120


def _lagging_run(root: Path) -> Path:
    """An epoch of 240 one-datapoint pages whose index.json lists the first 120 (a writer that crashed, or is still
    writing)."""
    run = root / "run"
    write_json(run / epoch_dir_name(0) / VALIDATION_SCORES,
               {"aggregated": {"acc": 0.5}, "per_datapoint": {"acc": [0.5] * LAG_N}})
    debug = run / epoch_dir_name(0) / DEBUGGER_DIR
    write_pages(debug, range(LAG_N // 2), per_page=1, with_index=True)
    for i in range(LAG_N // 2, LAG_N):
        joblib.dump({i: {"dbg": {"x": i}}}, debug / f"page_{i}.pkl")
    return run


def test_an_index_that_lags_its_pages_never_races_the_background_scan(tmp_path: Path) -> None:
    run = _lagging_run(tmp_path)
    for trial in range(5):  # the race showed in most tries; each trial is a cold store and a cold cache
        with LogStore(run, cache_dir=tmp_path / f"cache{trial}", rescan_s=0) as store:
            key = store.default_pass("run")
            store.scores(key)
            store.datapoint(key, 0)
            store.wait_background(20)
            assert store.debug_status(key).datapoints == LAG_N
            record = store.datapoint(key, LAG_N - 1)
            assert record.debug, "read from a page the index does not list yet"
            assert [p for p in record.problems if "still being written" in p and "60 of 120 pages" in p], \
                record.problems


def _text(component: object) -> str:
    """Every string in a Dash component tree."""
    if isinstance(component, str):
        return component
    if isinstance(component, (list, tuple)):
        return " ".join(_text(c) for c in component)
    children = getattr(component, "children", None)
    return "" if children is None else _text(children)


def _write_page_then_index(debug: Path, pages: dict[str, list[int]], page_no: int, indices: list[int]) -> None:
    """What the capture writer does: the page by rename, then index.json rewritten to list it."""
    import json
    import os

    name = f"page_{page_no}.pkl"
    joblib.dump({i: datapoint_outputs(i) for i in indices}, debug / f".{name}.tmp")
    os.replace(debug / f".{name}.tmp", debug / name)
    pages[name] = indices
    payload = {"format_version": 1, "pages": {n: {"indices": idx} for n, idx in pages.items()}}
    (debug / ".index.tmp").write_text(json.dumps(payload))
    os.replace(debug / ".index.tmp", debug / "index.json")


def test_views_of_a_pass_being_written_say_so_and_never_go_stale(tmp_path: Path) -> None:
    """A writer thread lands pages one by one while views are drawn and kept: no error, a view drawn before a page
    landed says the pass is being written, and once every page is there no view still says "no debugger"."""
    from eval_viewer.app.rendered import RenderedViews
    from eval_viewer.app.state import parse_query, resolve

    run = tmp_path / "live"
    write_json(run / epoch_dir_name(0) / VALIDATION_SCORES, scores_payload(N, 0))
    debug = run / epoch_dir_name(0) / DEBUGGER_DIR
    debug.mkdir(parents=True)
    pages: dict[str, list[int]] = {}
    joblib.dump({0: datapoint_outputs(0)}, debug / "page_0.pkl")  # one page before the index: a pass is listed
    pages["page_0.pkl"] = [0]

    def writer() -> None:
        for page_no, start in enumerate(range(1, N, 2), start=1):
            time.sleep(0.03)
            _write_page_then_index(debug, pages, page_no, list(range(start, min(start + 2, N))))
        epoch1 = run / epoch_dir_name(1) / DEBUGGER_DIR  # then a new epoch appears, its pages landing one by one
        epoch1.mkdir(parents=True)
        write_json(run / epoch_dir_name(1) / VALIDATION_SCORES, scores_payload(N, 1))
        pages1: dict[str, list[int]] = {}
        for page_no, start in enumerate(range(0, N, 4)):
            time.sleep(0.03)
            _write_page_then_index(epoch1, pages1, page_no, list(range(start, min(start + 4, N))))

    with LogStore(run, cache_dir=tmp_path / "cache", rescan_s=0) as store:
        views = RenderedViews(store, prefetch=False)
        thread = threading.Thread(target=writer)
        thread.start()
        said_so = 0
        while thread.is_alive():
            store.refresh()
            epochs = [p.key.step for p in store.run("live").passes]
            for idx, epoch in ((i, e) for e in epochs for i in range(N)):
                state = resolve(store, parse_query(f"?run=live&split=val&epoch={epoch}&idx={idx}")).state
                record = store.datapoint(state.pass_key, idx)
                views.get(state)  # drawn (and kept when complete) while pages land
                if not record.debug:
                    assert any("still being written" in p or "still indexing" in p for p in record.problems), \
                        record.problems
                    said_so += 1
        thread.join()
        store.refresh()
        store.wait_background(20)
        assert [p.key.step for p in store.run("live").passes] == [0, 1]
        for idx, epoch in ((i, e) for e in (0, 1) for i in range(N)):
            state = resolve(store, parse_query(f"?run=live&split=val&epoch={epoch}&idx={idx}")).state
            assert "No debugger saved anything" not in _text(views.get(state)), (epoch, idx)
            record = store.datapoint(state.pass_key, idx)
            assert record.debug and not record.problems, (epoch, idx, record.problems)
        views.close()
    assert said_so, "some views were drawn before their page landed"


def test_a_pass_whose_debugger_folder_is_still_empty_says_so(tmp_path: Path) -> None:
    """The moment between a writer creating ``debugger/`` and its first page: the view must not simply say that no
    debugger saved anything (this was the race that made the live test above fail now and then)."""
    run = tmp_path / "live"
    write_json(run / epoch_dir_name(0) / VALIDATION_SCORES, scores_payload(N, 0))
    (run / epoch_dir_name(0) / DEBUGGER_DIR).mkdir()
    with LogStore(run, cache_dir=tmp_path / "cache", rescan_s=0) as store:
        record = store.datapoint(store.default_pass("live"), 0)
        assert not record.debug
        assert [p for p in record.problems if "holds no pages yet" in p and "still being written" in p], \
            record.problems


def test_the_datapoints_a_crashed_writer_left_out_are_listed(tmp_path: Path) -> None:
    """Scores for 12 datapoints, pages for 0-3 and 8-11 (the page of 4-7 was never written, or is unreadable): the
    store and the notebook API name 4-7, and only once the index is complete."""
    import eval_viewer

    run = tmp_path / "crashed"
    write_json(run / epoch_dir_name(0) / VALIDATION_SCORES, scores_payload(12, 0))
    debug = run / epoch_dir_name(0) / DEBUGGER_DIR
    write_pages(debug, [0, 1, 2, 3, 8, 9, 10, 11], per_page=4, with_index=False)
    (debug / "page_9.pkl").write_bytes(b"not a pickle")  # a damaged page holds nothing readable
    with LogStore(run, cache_dir=tmp_path / "cache", rescan_s=0) as store:
        key = store.default_pass("crashed")
        assert store.wait_for_index(key, 20)
        assert store.missing_debug(key) == (4, 5, 6, 7)
    with eval_viewer.open(run, cache_dir=tmp_path / "cache2") as logs:
        assert logs.missing_debug(logs.pass_("crashed")) == (4, 5, 6, 7)
    no_debug = tmp_path / "scores_only"
    write_json(no_debug / epoch_dir_name(0) / VALIDATION_SCORES, scores_payload(3, 0))
    with LogStore(no_debug, cache_dir=tmp_path / "cache3", rescan_s=0) as store:
        assert store.missing_debug(store.default_pass("scores_only")) is None


class _SlowIndexFiles(LocalSource):
    """A local log dir whose debugger index files take until ``gate`` opens to read, as on object storage under load
    (``reading`` is set when a read has started)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate, self.reading = threading.Event(), threading.Event()

    def read_bytes(self, rel: str) -> bytes:
        if is_index_name(rel.rsplit("/", 1)[-1]):
            self.reading.set()
            assert self.gate.wait(20)
        return super().read_bytes(rel)


def test_a_reader_during_a_refresh_sees_indexing_never_an_index_without_the_new_pages(tmp_path: Path) -> None:
    """While a refresh is still fetching the index files of a new listing, the index is not ready (the app keeps
    polling) and says nothing about pages missing from it; once published, every datapoint is found. (CI saw the
    app draw a datapoint in between as "not in its index yet, nothing saved" and stop polling for good.)"""
    write_json(tmp_path / "run" / EVALUATION_SCORES, scores_payload(N, 0))
    write_pages(tmp_path / "run" / DEBUGGER_DIR, range(N), per_page=4, epoch=None, with_index=True)
    source = _SlowIndexFiles(tmp_path)
    (files,) = take_snapshot([source]).files.values()
    listing = files.debug
    index = DebugIndex(source, f"run/{DEBUGGER_DIR}", trust=False, cache_dir=None, submit=lambda fn, *a: fn(*a))
    refresh = threading.Thread(target=index.refresh, args=(listing,))
    refresh.start()
    try:
        assert source.reading.wait(20)
        assert not index.status().ready
        assert index.writing(missing=False) is None and index.page_of(3) is None
    finally:
        source.gate.set()
        refresh.join(20)
    assert index.status().ready and index.page_of(3) == "page_0.pkl" and index.writing(missing=False) is None
    assert [index.page_of(i) is not None for i in range(N)] == [True] * N
