"""Pass-wide jobs in worker processes (:mod:`eval_viewer.backend.workers`): when they are used, that results come
back in order, that a worker dying loses nothing, and that a damaged page says the same in a worker as in-process."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from health_run import N, write_health_run

from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.bulk import PassPages
from eval_viewer.backend.health_summary import compute_health
from eval_viewer.backend.sources import FsspecSource, LocalSource
from eval_viewer.backend.workers import ENV, MIN_BYTES, WARM_AHEAD, job_workers, run_tasks
from eval_viewer.log_format import page_name

KEY = PassKey("planted", "val", 0)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workers")
    write_health_run(root / "planted", epochs=1)
    return root


def _pages(tmp_path: Path, sizes: list[int]) -> PassPages:
    for i, size in enumerate(sizes):
        (tmp_path / page_name(i)).write_bytes(b"\0" * size)
    return PassPages(KEY, LocalSource(tmp_path), tuple((page_name(i), (i,)) for i in range(len(sizes))), False)


def test_small_passes_single_pages_and_memory_sources_stay_in_process(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr("joblib.cpu_count", lambda: 4)
    for folder in ("small", "one", "big"):
        (tmp_path / folder).mkdir()
    assert job_workers(_pages(tmp_path / "small", [1000, 1000])) == 0, "small: a worker's start costs more"
    assert job_workers(_pages(tmp_path / "one", [MIN_BYTES + 1])) == 0, "a single page is one task"
    big = _pages(tmp_path / "big", [MIN_BYTES // 2 + 1] * 3)
    assert job_workers(big) == 3, "one per page, up to one per core"
    monkeypatch.setattr("joblib.cpu_count", lambda: 1)
    assert job_workers(big) == 0, "one core: nothing to gain"

    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/workers-test/x", b"1")
    memory = FsspecSource("memory://workers-test")
    assert not memory.process_shared and LocalSource(tmp_path).process_shared
    monkeypatch.setenv(ENV, "2")
    assert job_workers(PassPages(KEY, memory, big.pages, False)) == 0, "another process sees no memory:// files"


def test_the_environment_sets_the_number_of_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    pages = _pages(tmp_path, [10, 10, 10])
    monkeypatch.setenv(ENV, "2")
    assert job_workers(pages) == 2
    monkeypatch.setenv(ENV, "0")
    assert job_workers(pages) == 0
    monkeypatch.setenv(ENV, "many")
    with caplog.at_level(logging.WARNING):
        assert job_workers(pages) == 0  # the default for these 30 bytes
    assert "EVAL_VIEWER_JOB_WORKERS='many' is not a number" in caplog.text


def _square(x: int) -> int:
    return x * x


def _die_unless(parent: int, x: int) -> int:
    """Kills the worker process it runs in (as the kernel's OOM killer would); runs normally in-process."""
    if os.getpid() != parent and x == 3:
        os._exit(9)
    return x * x


def test_results_come_back_in_order() -> None:
    tasks = [partial(_square, x) for x in range(12)]
    assert list(run_tasks(tasks, 2)) == [x * x for x in range(12)]
    assert list(run_tasks(tasks, 0)) == [x * x for x in range(12)]
    stop = threading.Event()
    stop.set()
    assert list(run_tasks(tasks, 2, stop)) == [] and list(run_tasks(tasks, 0, stop)) == []
    for workers in (0, 2):
        stop.clear()
        got = []
        for result in run_tasks(tasks, workers, stop):
            got.append(result)
            stop.set()  # stopped after the first result: nothing more comes
        assert got == [0]


@pytest.mark.parametrize("workers", [0, 2])
def test_pages_are_warmed_in_task_order_and_never_far_ahead(workers: int) -> None:
    """The caller's warming thread reads the next tasks' pages in order, at most ``workers + WARM_AHEAD`` tasks past
    the last finished one (warming runs beside the tasks, so only that bound and the order are certain)."""
    warmed: list[int] = []
    lock = threading.Lock()

    def warm(i: int) -> None:
        with lock:
            warmed.append(i)

    tasks = [partial(_square, x) for x in range(10)]
    done = 0
    for result in run_tasks(tasks, workers, warm=[partial(warm, i) for i in range(10)]):
        with lock:
            assert len(warmed) <= done + 1 + max(workers, 1) + WARM_AHEAD
        assert result == done * done
        done += 1
    assert warmed == list(range(len(warmed)))


def test_warming_a_page_never_fails(tmp_path: Path) -> None:
    source = LocalSource(tmp_path)
    (tmp_path / "page_0.pkl").write_bytes(b"x" * (3 << 20))
    (tmp_path / "escape.pkl").symlink_to(shutil.which("python") or "/bin/sh")  # a link out of the log dir
    for rel in ("page_0.pkl", "missing.pkl", "escape.pkl", ""):
        source.warm(rel)  # (what it warms is not visible from Python; that it returns is)


def test_a_worker_that_dies_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    tasks = [partial(_die_unless, os.getpid(), x) for x in range(8)]
    with caplog.at_level(logging.WARNING):
        assert list(run_tasks(tasks, 2)) == [x * x for x in range(8)]
    assert "a worker process of a pass-wide job died" in caplog.text
    assert list(run_tasks([partial(_square, 5)] * 3, 2)) == [25] * 3, "the next job gets working workers again"


def test_a_damaged_page_reads_the_same_in_a_worker_and_in_process(logs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "logs"
    shutil.copytree(logs, copy)
    broken = copy / "planted" / "epoch_0" / "debugger" / page_name(1)
    broken.write_bytes(broken.read_bytes()[:300])
    summaries = []
    for workers in (0, 2):
        with LogStore(copy, cache_dir=tmp_path / f"cache{workers}", rescan_s=0, index_wait_s=30) as store:
            summaries.append(compute_health(store, KEY, workers=workers))
    inproc, worker = summaries
    assert any(str(broken) in note for note in worker.notes) and worker.notes == inproc.notes
    assert worker.idx.tolist() == inproc.idx.tolist() and 0 < len(worker.idx) < N, "the damaged page's datapoints left out"
    assert worker.table() == inproc.table()
    for name, arrays in inproc.arrays.items():
        for field, values in arrays.items():
            np.testing.assert_array_equal(worker.arrays[name][field], values, err_msg=f"{name}:{field}")


def test_a_server_store_starts_the_workers_when_a_large_pass_is_opened(
        logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prepare_workers`` starts the job workers in the background as soon as a pass that will use them is opened
    (here the threshold is lowered to this small log), and ``wait_background`` waits for them; a store without it,
    or a pass too small, starts none."""
    from eval_viewer.backend import workers

    started: list[int] = []
    monkeypatch.setattr(workers, "_PREPARED", set())
    monkeypatch.setattr(workers.joblib, "Parallel", _Recording(started))
    with LogStore(logs, cache_dir=tmp_path / "c1", rescan_s=0) as store:
        store.scores(KEY)
    with LogStore(logs, cache_dir=tmp_path / "c2", rescan_s=0, prepare_workers=True) as store:
        store.scores(KEY)  # too small for workers
    monkeypatch.setattr(workers, "MIN_BYTES", 1)
    monkeypatch.setenv(ENV, "")
    with LogStore(logs, cache_dir=tmp_path / "c3", rescan_s=0) as store:
        store.scores(KEY)
    assert started == []
    with LogStore(logs, cache_dir=tmp_path / "c4", rescan_s=0, prepare_workers=True) as store:
        store.scores(KEY)
        store.scores(KEY)  # once per process
        assert store.wait_background(10)  # the store's background work includes the workers' start
        assert len(started) == 1
    expected = job_workers(store.pass_pages(KEY))
    assert expected >= 1 and started == [expected]


class _Recording:
    """Stands in for ``joblib.Parallel`` to see what ``prepare`` asks for without starting processes in a test."""

    def __init__(self, started: list[int]) -> None:
        self.started = started

    def __call__(self, n_jobs: int, backend: str) -> Callable[[Any], list[Any]]:
        assert backend == "loky"
        self.started.append(n_jobs)
        return lambda calls: [None for _ in calls]


def test_pages_with_columns_are_split_into_parts_on_workers(logs: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """On workers, a page whose columns are cached is read in parts of about TASK_BYTES (each part its own
    datapoints, in order, all of them once); in-process, or without columns, pages stay whole. The summary is the
    same either way."""
    from eval_viewer.backend import workers

    with LogStore(logs, cache_dir=tmp_path / "cache", rescan_s=0, index_wait_s=20) as store:
        pages = store.pass_pages(KEY)
        store.wait_background(20)
        whole = compute_health(store, KEY, workers=0)
        monkeypatch.setattr(workers, "TASK_BYTES", 1)  # every datapoint its own part
        assert workers.page_parts(pages, 0) == [(rel, None) for rel, _ in pages.pages]
        parts = workers.page_parts(pages, 2)
        listed = dict(pages.pages)
        assert [i for rel, part in parts for i in (listed[rel] if part is None else part)] == \
            [i for _, indices in pages.pages for i in indices]
        assert len(parts) == pages.num_datapoints
        split = compute_health(store, KEY, workers=2)
        assert split.table() == whole.table() and np.array_equal(split.idx, whole.idx)
        for name, arrays in whole.arrays.items():
            for field, values in arrays.items():
                np.testing.assert_array_equal(split.arrays[name][field], values, err_msg=f"{name} {field}")
        shutil.rmtree(tmp_path / "cache" / "columns")
        assert workers.page_parts(pages, 2) == [(rel, None) for rel, _ in pages.pages]
