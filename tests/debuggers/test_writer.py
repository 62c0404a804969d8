"""The background page writer on real files: page splitting, index, staging, bounded queue, error surfacing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest

from eval_viewer import log_format as lf
from eval_viewer.debuggers.writer import PageWriter, Record
from eval_viewer.errors import CaptureError

KB = 1024


def records(indices: range, size: int = KB) -> list[Record]:
    """One record per idx holding ``size`` bytes of uint8 whose values encode the idx."""
    return [Record(i, {"dbg": {"arr": np.full(size, i % 251, dtype=np.uint8)}}, {"i": i}) for i in indices]


def feed(writer: PageWriter, batches: list[list[Record]]) -> None:
    for batch in batches:
        writer.submit(lambda b=batch: iter(b), sum(r.outputs["dbg"]["arr"].nbytes for r in batch))


@pytest.fixture
def writer() -> Iterator[PageWriter]:
    w = PageWriter(page_size_bytes=10 * KB, max_queue_bytes=64 * KB, debuggers={"dbg": {"class": "x.Y", "kinds": {}}})
    yield w
    w.close()


def test_pages_split_at_the_limit_and_hold_every_datapoint_once(writer: PageWriter, tmp_path: Path) -> None:
    writer.begin(tmp_path)
    all_records = records(range(95))
    feed(writer, [all_records[i : i + 7] for i in range(0, 95, 7)])
    paths = writer.finish()
    # 1 KiB + key bytes per record: 9 records fit in 10 KiB, the 10th would pass the limit.
    assert [p.name for p in paths] == [lf.page_name(k) for k in range(11)]
    seen: list[int] = []
    for path in paths:
        page = joblib.load(path)
        assert isinstance(page, dict) and len(page) <= 9
        assert path.stat().st_size <= 10 * KB + 2 * KB  # counted bytes <= limit, plus pickle overhead
        for idx, outputs in page.items():
            assert set(outputs) == {"dbg"} and (outputs["dbg"]["arr"] == idx % 251).all()
        seen.extend(page)
    assert sorted(seen) == list(range(95)) and len(seen) == 95
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["format_version"] == lf.FORMAT_VERSION and index["rank"] is None
    assert {name: info["indices"] for name, info in index["pages"].items()} == {
        p.name: list(joblib.load(p)) for p in paths
    }
    assert all(info["bytes"] == (tmp_path / name).stat().st_size for name, info in index["pages"].items())
    assert index["debuggers"] == {"dbg": {"class": "x.Y", "kinds": {}}}
    assert index["meta"]["42"] == {"i": 42}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_record_larger_than_the_limit_gets_its_own_page(writer: PageWriter, tmp_path: Path) -> None:
    writer.begin(tmp_path)
    feed(writer, [records(range(2), KB), records(range(2, 3), 30 * KB), records(range(3, 4), KB)])
    paths = writer.finish()
    assert [sorted(joblib.load(p)) for p in paths] == [[0, 1], [2], [3]]


def test_index_is_rewritten_after_every_page_while_running(writer: PageWriter, tmp_path: Path) -> None:
    writer.begin(tmp_path)
    feed(writer, [records(range(20))])
    deadline = time.monotonic() + 10
    index_path = tmp_path / "index.json"
    while not index_path.exists() or len(json.loads(index_path.read_text())["pages"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [len(info["indices"]) for info in index["pages"].values()] == [9, 9]
    assert len(writer.finish()) == 3


def test_staged_pages_move_into_the_folder_given_at_finish(writer: PageWriter, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    w = PageWriter(page_size_bytes=4 * KB, max_queue_bytes=64 * KB, staging_root=staging)
    try:
        w.begin(None)
        feed(w, [records(range(10))])
        deadline = time.monotonic() + 10
        # full pages spill to staging (beside the log, in .eval_viewer_staging) before the folder is known
        while len(list(staging.glob(".eval_viewer_staging/*/page_*.pkl"))) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        target = tmp_path / "epoch_3" / "debugger"
        paths = w.finish(target)
    finally:
        w.close()
    assert all(p.parent == target for p in paths) and len(paths) == 4
    assert sorted(i for p in paths for i in joblib.load(p)) == list(range(10))
    assert list(staging.iterdir()) == []  # the staging folder is removed once its pages are in place
    listed = sorted(p.name for p in target.iterdir() if not p.name.startswith("."))  # dotfiles: the writer's claim
    assert listed == ["index.json"] + [lf.page_name(k) for k in range(4)]


def test_finish_refuses_another_folder_than_the_epochs(writer: PageWriter, tmp_path: Path) -> None:
    writer.begin(tmp_path / "epoch_1")
    feed(writer, [records(range(3))])
    with pytest.raises(CaptureError, match="another epoch's folder"):
        writer.finish(tmp_path / "epoch_2")
    assert not (tmp_path / "epoch_2").exists()
    assert [p.name for p in writer.finish(tmp_path / "epoch_1")] == ["page_0.pkl"]


def test_a_failing_page_write_raises_from_submit_and_finish_naming_the_page(writer: PageWriter, tmp_path: Path) -> None:
    (tmp_path / "page_1.pkl").mkdir()  # page 1 cannot be renamed into place
    (tmp_path / "page_1.pkl" / "x").write_text("in the way")
    writer.begin(tmp_path)
    feed(writer, [records(range(25))])
    with pytest.raises(CaptureError, match=r"page_1\.pkl") as info:
        for _ in range(200):
            writer.submit(lambda: iter(()), 0)
            time.sleep(0.01)
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(CaptureError, match=r"could not write debug page .*page_1\.pkl"):
        writer.finish()
    assert joblib.load(tmp_path / "page_0.pkl").keys() == set(range(9))  # what was written stays intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # The worker survived: the next epoch writes normally.
    writer.begin(tmp_path / "next")
    feed(writer, [records(range(3))])
    assert len(writer.finish()) == 1


class Unpicklable:
    def __reduce__(self) -> str:
        raise TypeError("cannot pickle this")


def test_an_unpicklable_output_fails_at_finish(writer: PageWriter, tmp_path: Path) -> None:
    writer.begin(tmp_path)
    writer.submit(lambda: iter([Record(0, {"dbg": Unpicklable()})]), 1)
    with pytest.raises(CaptureError, match=r"page_0\.pkl: cannot pickle this"):
        writer.finish()
    assert [p.name for p in tmp_path.iterdir()] == [".eval_viewer_writer.json"]  # no half-written page, no temp file


def test_an_error_preparing_a_batch_surfaces(writer: PageWriter, tmp_path: Path) -> None:
    def broken() -> Iterator[Record]:
        raise ValueError("conversion bug")
        yield

    writer.begin(tmp_path)
    writer.submit(broken, 10)
    with pytest.raises(CaptureError, match="conversion bug"):
        writer.finish()


def test_submit_waits_only_while_the_queue_bound_is_full(tmp_path: Path) -> None:
    release = threading.Event()
    w = PageWriter(page_size_bytes=KB, max_queue_bytes=100)
    try:
        w.begin(tmp_path)
        w.submit(lambda: (release.wait(10), iter(()))[1], 60)  # the worker is stuck on this one
        assert w.submit(lambda: iter(()), 40) < 0.05  # 100 bytes queued: still fits
        threading.Timer(0.3, release.set).start()
        stall = w.submit(lambda: iter(()), 1)  # 101 > 100: waits until the stuck work is done
        assert 0.2 < stall < 5
        assert w.stats.max_stall_s == pytest.approx(stall)
        w.finish()
    finally:
        release.set()
        w.close()


def test_duplicates_are_kept_once_and_stale_pages_are_removed(writer: PageWriter, tmp_path: Path) -> None:
    (tmp_path / "page_7.pkl").write_bytes(b"old run")
    (tmp_path / "page_rank1_0.pkl").write_bytes(b"another rank: kept")
    writer.begin(tmp_path)
    feed(writer, [records(range(3)), records(range(2, 5))])
    paths = writer.finish()
    assert sorted(i for p in paths for i in joblib.load(p)) == [0, 1, 2, 3, 4]
    assert not (tmp_path / "page_7.pkl").exists()
    assert (tmp_path / "page_rank1_0.pkl").exists()


def test_rank_names_pages_and_index(tmp_path: Path) -> None:
    w = PageWriter(page_size_bytes=KB, max_queue_bytes=64 * KB, rank=2)
    try:
        w.begin(tmp_path)
        feed(w, [records(range(2), 256)])
        paths = w.finish()
    finally:
        w.close()
    assert [p.name for p in paths] == ["page_rank2_0.pkl"]
    assert json.loads((tmp_path / "index_rank2.json").read_text())["rank"] == 2


def test_submit_without_an_epoch_and_after_close_is_an_error(tmp_path: Path) -> None:
    w = PageWriter(page_size_bytes=KB, max_queue_bytes=KB)
    with pytest.raises(CaptureError, match="no capture epoch"):
        w.submit(lambda: iter(()), 0)
    w.begin(tmp_path)
    w.close()
    with pytest.raises(CaptureError):
        w.submit(lambda: iter(()), 0)


def test_staged_pages_cross_filesystems_atomically(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a writable /dev/shm on another filesystem than tmp_path")
    staging = Path(tempfile.mkdtemp(dir=shm))
    w = PageWriter(page_size_bytes=4 * KB, max_queue_bytes=64 * KB, staging_root=staging)
    try:
        w.begin(None)
        feed(w, [records(range(10))])
        paths = w.finish(tmp_path / "out")
    finally:
        w.close()
        shutil.rmtree(staging, ignore_errors=True)
    assert sorted(i for p in paths for i in joblib.load(p)) == list(range(10))
    listed = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert listed == ["index.json"] + [lf.page_name(k) for k in range(4)]
