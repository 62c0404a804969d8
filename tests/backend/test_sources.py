"""Logs behind an fsspec URL (``memory://`` here; ``s3://`` against a loopback server is in tests/remote) read exactly
like the same log on the local disk: same runs, passes, scores and datapoints, and the same error messages."""

from __future__ import annotations

import mmap
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from capture_run import N, write_run

from eval_viewer.backend import FsspecSource, LocalSource, LogStore, PassKey, open_source
from eval_viewer.backend.store import PassLike
from eval_viewer.errors import LogDirError, ScoresError
from eval_viewer.log_format import DEBUGGER_DIR, VALIDATION_SCORES, epoch_dir_name

fsspec = pytest.importorskip("fsspec")


def _upload(local: Path, fs: Any, remote: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{remote}/{path.relative_to(local).as_posix()}", path.read_bytes())


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """fsspec's memory filesystem and a fresh folder in it (the filesystem is process-wide: removed afterwards)."""
    fs = fsspec.filesystem("memory")
    root = f"/eval-viewer-test-{uuid.uuid4().hex[:12]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run written by our capture code: val epochs 0 and 1, debug pages (with the writer's index) in epoch 1."""
    run = tmp_path_factory.mktemp("captured") / "run"
    write_run(run, capture_epochs=(1,), epochs=2)
    return run


@pytest.fixture
def both(captured: Path, tmp_path: Path, memory: tuple[Any, str]) -> tuple[Path, str, Any]:
    """The captured run copied to ``tmp_path/local/run`` and to ``memory://<root>/run``: (local run, URL, fs)."""
    fs, root = memory
    local = tmp_path / "local" / "run"
    shutil.copytree(captured, local)
    _upload(local, fs, f"{root}/run")
    return local, f"memory://{root}/run", fs


def _same(a: Any, b: Any) -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert a == b


def _record_view(store: LogStore, key: PassLike, idx: int) -> list[tuple[str, str, str, str, Any]]:
    record = store.datapoint(key, idx)
    assert record.problems == ()
    return [(section, name, item.key, item.kind, item.value) for section, name, item in record.items()]


def test_open_source_picks_the_source_by_location(tmp_path: Path, memory: tuple[Any, str]) -> None:
    fs, root = memory
    fs.pipe_file(f"{root}/x/file.txt", b"abcdef")
    assert isinstance(open_source(str(tmp_path)), LocalSource)
    local = open_source(f"file://{tmp_path}")
    assert isinstance(local, LocalSource) and local.location == f"file://{tmp_path}"
    source = open_source(f"memory://{root}")
    assert isinstance(source, FsspecSource)
    files, dirs = source.list("x") or ({}, [])
    assert dirs == [] and set(files) == {"file.txt"} and files["file.txt"].size == 6
    assert source.list("nope") is None and source.stat("x") is None and source.stat("x/nope") is None
    with source.open("x/file.txt") as f:
        assert f.read_at(2, 3) == b"cde" and f.read_at(5, 10) == b"f" and f.read_at(6, 1) == b""
        assert f.stat == files["file.txt"] == source.stat("x/file.txt")  # listing, stat and open agree
    with pytest.raises(LogDirError, match="log dir does not exist"):
        open_source(f"memory://{root}/missing")


def test_a_memory_log_reads_the_same_as_the_local_copy(make_store: Callable[..., LogStore],
                                                       both: tuple[Path, str, Any]) -> None:
    local_dir, url, _ = both
    local, remote = make_store(local_dir), make_store(url)
    assert [r.name for r in remote.runs()] == [r.name for r in local.runs()] == ["run"]
    assert remote.run("run").location == url
    strip = [(p.key, p.has_scores, p.has_debug) for p in local.run("run").passes]
    assert [(p.key, p.has_scores, p.has_debug) for p in remote.run("run").passes] == strip == [
        (PassKey("run", "val", 0), True, False), (PassKey("run", "val", 1), True, True)]
    assert remote.run("run").find("val", 1).location == f"{url}/{epoch_dir_name(1)}"
    for key in (PassKey("run", "val", 0), PassKey("run", "val", 1)):
        a, b = local.scores(key), remote.scores(key)
        assert b.path == f"{url}/{epoch_dir_name(key.step)}/{VALIDATION_SCORES}"
        _same(dict(a.per_datapoint), dict(b.per_datapoint))
        assert a.aggregated == b.aggregated and a.problems == b.problems == ()
    key = PassKey("run", "val", 1)
    a_status, b_status = local.debug_status(key), remote.debug_status(key)
    assert a_status is not None and b_status is not None
    assert (b_status.ready, b_status.pages, b_status.datapoints) == (a_status.ready, a_status.pages, N)
    assert remote.meta_table(key) == local.meta_table(key)
    for idx in (0, 7, N - 1):
        _same(_record_view(remote, key, idx), _record_view(local, key, idx))
    assert remote.datapoint(PassKey("run", "val", 0), 3).scores == local.datapoint(PassKey("run", "val", 0), 3).scores


def _normalized(problems: tuple[str, ...] | list[str], local_dir: Path, url: str) -> list[str]:
    return [p.replace(str(local_dir), "<run>").replace(url, "<run>") for p in problems]


def test_corrupt_and_missing_pages_say_the_same_on_memory_as_locally(make_store: Callable[..., LogStore],
                                                                     both: tuple[Path, str, Any]) -> None:
    local_dir, url, fs = both
    root = url[len("memory://"):]
    debug_rel = f"{epoch_dir_name(1)}/{DEBUGGER_DIR}"
    pages = sorted(p.name for p in (local_dir / debug_rel).glob("page_*.pkl"))
    assert len(pages) >= 3
    corrupt, missing = pages[1], pages[0]
    garbage = b"\x80\x04garbage" * 10
    (local_dir / debug_rel / corrupt).write_bytes(garbage)
    fs.pipe_file(f"{root}/{debug_rel}/{corrupt}", garbage)
    local, remote = make_store(local_dir), make_store(url)
    key = PassKey("run", "val", 1)
    assert local.wait_for_index(key, timeout=20) and remote.wait_for_index(key, timeout=20)
    first_idx = {name: idx for name, idx in _page_firsts(local_dir / debug_rel).items()}

    # a corrupt page: the same message, naming the page the way each log dir was given
    a, b = local.datapoint(key, first_idx[corrupt]), remote.datapoint(key, first_idx[corrupt])
    assert a.debug == b.debug == {} and a.scores == b.scores
    assert any(f"{url}/{debug_rel}/{corrupt}: corrupt or truncated" in p for p in b.problems), b.problems
    assert _normalized(b.problems, local_dir, url) == _normalized(a.problems, local_dir, url)

    # a page deleted after it was indexed
    (local_dir / debug_rel / missing).unlink()
    fs.rm(f"{root}/{debug_rel}/{missing}")
    local.clear_cache()
    remote.clear_cache()
    a, b = local.datapoint(key, first_idx[missing]), remote.datapoint(key, first_idx[missing])
    assert a.debug == b.debug == {}
    assert f"{url}/{debug_rel}/{missing}: page is missing (deleted since it was indexed?)" in b.problems
    assert _normalized(b.problems, local_dir, url) == _normalized(a.problems, local_dir, url)

    # ...and once the snapshot sees it gone, the index says which page it lists that is missing
    local.refresh()
    remote.refresh()
    a_status, b_status = local.debug_status(key), remote.debug_status(key)
    assert a_status is not None and b_status is not None
    assert any(f"lists page {missing}, which is missing" in p for p in b_status.problems), b_status.problems
    assert _normalized(b_status.problems, local_dir, url) == _normalized(a_status.problems, local_dir, url)

    # a scores file deleted after the snapshot listed it
    scores_rel = f"{epoch_dir_name(0)}/{VALIDATION_SCORES}"
    (local_dir / scores_rel).unlink()
    fs.rm(f"{root}/{scores_rel}")
    errors = []
    for store in (local, remote):
        with pytest.raises(ScoresError, match="scores file is missing") as err:
            store.scores(PassKey("run", "val", 0))
        errors.append(str(err.value))
    assert _normalized(errors[1:], local_dir, url) == _normalized(errors[:1], local_dir, url)


def _page_firsts(debug_dir: Path) -> dict[str, int]:
    """The first datapoint of each page, from the writer's index."""
    import json

    index = json.loads((debug_dir / "index.json").read_text())
    return {name: entry["indices"][0] for name, entry in index["pages"].items()}


def test_index_and_skeleton_caches_serve_a_memory_log_without_parsing_pages(
        make_store: Callable[..., LogStore], trainer_run: Path, memory: tuple[Any, str],
        outputs_of: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages without an index.json are scanned once; the next store finds the scan and the skeletons in the cache."""
    fs, root = memory
    _upload(trainer_run, fs, f"{root}/trainer")
    url = f"memory://{root}/trainer"
    key = PassKey("trainer", "val", 10)
    first = make_store(url)
    assert first.wait_for_index(key, timeout=20)
    assert first.wait_background(timeout=20)
    first.close()

    import eval_viewer.backend.index as index
    import eval_viewer.backend.pages as pages

    def no_parsing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a page was parsed although its index and skeletons are cached")

    monkeypatch.setattr(index, "parse_page", no_parsing)
    monkeypatch.setattr(pages, "parse_page", no_parsing)
    again = make_store(url, index_wait_s=0.0)
    status = again.debug_status(key)
    assert status is not None and status.ready and status.datapoints == 12 and status.problems == ()
    for idx in (0, 6, 11):
        record = again.datapoint(key, idx)
        assert record.problems == ()
        np.testing.assert_array_equal(record.debug_item("gradcam").value, outputs_of(idx, 10)["gradcam"])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[dict[str, Any]]:
    """A moto S3 server on loopback for this module; yields the storage options that reach it (dummy credentials)."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "eu-west-1"}}
    finally:
        server.stop()


def test_a_refresh_sees_what_another_writer_added_deep_in_an_s3_log(
        make_store: Callable[..., LogStore], trainer_run: Path, s3_server: dict[str, Any],
        scores_writer: Callable[..., Path], pages_writer: Callable[..., Any], tmp_path: Path) -> None:
    """s3fs caches listings and its invalidate_cache(root) drops only the root and its parents: a new epoch of an
    existing run, or a new debugger folder in an existing epoch, must still appear after store.refresh()."""
    import s3fs

    writer = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server)  # the trainer: another client
    bucket = f"ev-{uuid.uuid4().hex[:12]}"
    writer.mkdir(bucket)
    _upload(trainer_run, writer, f"{bucket}/logs/trainer")
    store = make_store(f"s3://{bucket}/logs", storage_options=s3_server)
    run = store.run("trainer")
    assert run.steps("val") == (0, 2, 10) and not run.find("val", 2).has_debug

    extra = tmp_path / "extra"
    scores_writer(extra / epoch_dir_name(11) / VALIDATION_SCORES, epoch=11)
    pages_writer(extra / epoch_dir_name(2) / DEBUGGER_DIR, range(12), per_page=12, epoch=2)
    _upload(extra, writer, f"{bucket}/logs/trainer")
    store.refresh()
    run = store.run("trainer")
    assert run.steps("val") == (0, 2, 10, 11)
    assert run.find("val", 2).has_debug
    record = store.datapoint(PassKey("trainer", "val", 2), 5)
    assert record.problems == () and record.debug_item("layer4", "feature_map").value.shape == (8, 4, 4)


def test_a_local_file_maps_a_span_read_only(tmp_path: Path) -> None:
    """RangeFile.map (used by job workers only): the span's bytes without a copy, read-only; None past the end."""
    data = bytes(range(256)) * 40_000  # 10 MB, so spans start past the mapping granularity
    (tmp_path / "page_0.pkl").write_bytes(data)
    with LocalSource(tmp_path).open("page_0.pkl") as fobj:
        for offset, n in ((0, 10), (12_345, 70_000), (len(data) - 5, 5), (mmap.ALLOCATIONGRANULARITY * 3 + 1, 1)):
            view = fobj.map(offset, n)
            assert view is not None and view.readonly and bytes(view) == data[offset:offset + n]
        assert fobj.map(len(data) - 5, 6) is None and fobj.map(0, 0) is None
