"""A page read through its cached columns (eval_viewer.backend.columns) gives exactly what parsing it gives: the same
dicts in the same key order, the same plain values, the same read-only arrays; anything a column cannot hold falls
back to the parse, and a damaged, stale or differently trusted cache is never believed."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from eval_viewer.backend import LogStore, PassKey, bulk
from eval_viewer.backend.bulk import PassPages, read_page, reused_buffers
from eval_viewer.backend.columns import build_columns, decode, encode
from eval_viewer.backend.pages import open_page
from eval_viewer.backend.pickles import PageBuffer, parse_page
from eval_viewer.backend.sources import LocalSource
from eval_viewer.errors import UntrustedPickleError
from eval_viewer.log_format import DEBUGGER_DIR, EVALUATION_SCORES, FORMAT_VERSION, index_name, page_name

from backend_logs import scores_payload, write_json
from health_run import write_health_run
from hostile import Call

KEY = PassKey("run", "test")
N = 6


def _identical(got: Any, want: Any, where: str = "") -> None:
    """Equal, of the same types, dict keys in the same order, arrays of the same dtype, shape and writability."""
    assert type(got) is type(want), where
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            _identical(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            _identical(a, b, f"{where}[{i}]")
    elif isinstance(want, np.ndarray):
        assert (got.dtype, got.shape, got.flags.writeable) == (want.dtype, want.shape, want.flags.writeable), where
        np.testing.assert_array_equal(got, want, err_msg=where)
    elif isinstance(want, float) and want != want:
        assert got != got, where
    else:
        assert got == want, where


def _parsed(pages: PassPages, rel: str, select: bulk.Select | None) -> dict[int, Any]:
    """What the page gives when parsed (the path without columns)."""
    with open_page(pages.source, rel) as fobj:
        buffer = PageBuffer(bytes(fobj.read_at(0, fobj.size)), fobj.stat, fobj.name)
    content = parse_page(buffer, fobj.name, trust=pages.trust).content
    return bulk._values(content, buffer, fobj.name, dict(pages.pages)[rel], select)


def _datapoint(i: int) -> dict[str, Any]:
    """Every kind of leaf a column holds, and layouts that differ from datapoint to datapoint."""
    value: dict[str, Any] = {
        "record": {"inputs": {"image": np.full((3, 4 + i % 2, 5), i, dtype=np.uint8)},  # two shapes: two layouts
                   "meta_info": {"idx": i, "name": f"img_{i}.png", "weight": i / 3, "flag": i % 2 == 0,
                                 "none": None, "nan": float("nan"), "box": (1, 2.5, "x"), "tags": ["a", i]}},
        "attn": {"weights": np.random.default_rng(i).random((2, 3, 3)).astype(np.float16),
                 "axes": ["head", "query", "key"], "num_keys": 3, "summary": {"entropy": np.ones(2, np.float32)},
                 "empty": {}},
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3) + i,
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4) * i),
        "scalar_array": np.float64(i) * np.ones((), dtype=np.float64),
    }
    if i % 3 == 0:  # keys in another order, and a debugger that only some datapoints have
        value = {"attn": value["attn"], "record": value["record"], "extra": {"z": 1, "a": np.zeros(2)},
                 "big_endian": value["big_endian"], "fortran": value["fortran"], "scalar_array": value["scalar_array"]}
    return value


def _write(root: Path, content: Callable[[int], Any], per_page: int = N) -> Path:
    run = root / "run"
    write_json(run / EVALUATION_SCORES, scores_payload(N, 0))
    debug = run / DEBUGGER_DIR
    debug.mkdir(parents=True)
    pages = {}
    for number, start in enumerate(range(0, N, per_page)):
        chunk = list(range(start, min(start + per_page, N)))
        joblib.dump({i: content(i) for i in chunk}, debug / page_name(number))
        pages[page_name(number)] = {"indices": chunk, "bytes": 0}
    write_json(debug / index_name(None), {"format_version": FORMAT_VERSION, "rank": None, "pages": pages,
                                          "debuggers": {}, "meta": {}})
    return run


def _columns_files(cache: Path) -> list[Path]:
    return sorted((cache / "columns").glob("*.cols"))


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pages the bulk reader parses (a spy: every call goes through to the real parser)."""
    seen: list[str] = []

    def spy(fobj: Any, path: str, *, trust: bool) -> Any:
        seen.append(path)
        return parse_page(fobj, path, trust=trust)

    monkeypatch.setattr(bulk, "parse_page", spy)
    return seen


@pytest.mark.parametrize("select", [None, {"attn": None, "record": ["meta_info", "missing"]}, {"extra": None},
                                    {"nobody": None}, {"record": ["inputs"], "fortran": ["x"]}])
def test_columns_give_exactly_what_a_parse_gives(tmp_path: Path, make_store: Callable[..., LogStore],
                                                 parses: list[str], select: bulk.Select | None) -> None:
    store = make_store(_write(tmp_path, _datapoint, per_page=4))
    pages = store.pass_pages(KEY)
    store.wait_background(20)
    assert len(_columns_files(tmp_path / "cache")) == 2  # written by the index's one parse of each page
    for rel, indices in pages.pages:
        got = read_page(pages, rel, select=select)
        assert parses == []  # built from the columns, not parsed
        _identical(got.values, _parsed(pages, rel, select))
        assert list(got.values) == list(indices)
    few = read_page(pages, pages.pages[0][0], select=select, indices={3, 1})
    _identical(few.values, {i: v for i, v in _parsed(pages, pages.pages[0][0], select).items() if i in (1, 3)})


def test_a_real_capture_log_reads_the_same_through_its_columns(tmp_path: Path,
                                                               make_store: Callable[..., LogStore],
                                                               parses: list[str]) -> None:
    write_health_run(tmp_path / "planted")  # our capture code: recorder, feature maps, stats, attention
    store = make_store(tmp_path / "planted")
    pages = store.pass_pages(PassKey("planted", "val", 1))
    store.wait_background(20)
    assert pages.pages
    for rel, _ in pages.pages:
        got = read_page(pages, rel)
        _identical(got.values, _parsed(pages, rel, None))
    assert parses == []


def test_a_leaf_a_column_cannot_hold_is_read_by_parsing(tmp_path: Path, make_store: Callable[..., LogStore],
                                                        parses: list[str]) -> None:
    def content(i: int) -> dict[str, Any]:
        return {"dbg": {"x": np.arange(3) + i, "by_class": {0: 0.5, 1: 0.25}, "nested": [[1, 2], [3]]},
                "other": {"y": np.ones(2) * i}}

    store = make_store(_write(tmp_path, content))
    pages = store.pass_pages(KEY)
    store.wait_background(20)
    rel = pages.pages[0][0]
    whole = read_page(pages, rel)  # int keys and nested lists: opaque, so the page is parsed
    assert len(parses) == 1
    _identical(whole.values, _parsed(pages, rel, None))
    assert whole.values[2]["dbg"]["by_class"] == {0: 0.5, 1: 0.25}
    other = read_page(pages, rel, select={"other": None})  # nothing opaque selected: from the columns
    assert len(parses) == 1
    _identical(other.values, _parsed(pages, rel, {"other": None}))


def test_a_damaged_or_missing_column_file_costs_one_parse(tmp_path: Path, make_store: Callable[..., LogStore],
                                                         parses: list[str], caplog: pytest.LogCaptureFixture) -> None:
    store = make_store(_write(tmp_path, _datapoint, per_page=3))
    pages = store.pass_pages(KEY)
    store.wait_background(20)
    (first, _), (second, _) = pages.pages
    missing, damaged = _columns_files(tmp_path / "cache")  # (in page order: the index wrote them in that order)
    if not _holds(missing, pages, first):
        missing, damaged = damaged, missing
    missing.unlink()
    _identical(read_page(pages, first).values, _parsed(pages, first, None))
    assert len(parses) == 1 and missing.is_file()  # rewritten by that parse
    read_page(pages, first)
    assert len(parses) == 1
    damaged.write_bytes(damaged.read_bytes()[:-9])  # truncated
    with caplog.at_level(logging.WARNING):
        _identical(read_page(pages, second).values, _parsed(pages, second, None))
    assert len(parses) == 2 and "damaged column cache" in caplog.text
    read_page(pages, second)
    assert len(parses) == 2


def _holds(path: Path, pages: PassPages, rel: str) -> bool:
    """Whether the column file ``path`` is the one of page ``rel``."""
    stat = pages.source.stat(rel)
    return stat is not None and pages.cache is not None and pages.cache.columns_path(pages.ids[rel], stat) == path


def test_a_rewritten_page_never_meets_its_old_columns(tmp_path: Path, make_store: Callable[..., LogStore]) -> None:
    run = _write(tmp_path, _datapoint)
    store = make_store(run)
    pages = store.pass_pages(KEY)
    store.wait_background(20)
    rel = pages.pages[0][0]
    read_page(pages, rel)
    page = run / DEBUGGER_DIR / page_name(0)
    stat = page.stat()
    joblib.dump({i: {"attn": {"weights": np.full(5, -i, dtype=np.float32)}} for i in range(N)}, page)
    os.utime(page, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # (a new version even on a coarse clock)
    got = read_page(pages, rel)
    np.testing.assert_array_equal(got.values[4]["attn"]["weights"], np.full(5, -4, dtype=np.float32))
    assert "record" not in got.values[4]


def test_columns_of_a_trusting_process_are_not_read_without_trust(tmp_path: Path,
                                                                   make_store: Callable[..., LogStore]) -> None:
    def content(i: int) -> dict[str, Any]:
        value: dict[str, Any] = {"dbg": {"x": np.arange(4) + i}}
        if i == 3:
            value["extra"] = Call(os.getcwd)  # runs os.getcwd() when unpickled: harmless, but not on the list
        return value

    run = _write(tmp_path, content)
    cache = tmp_path / "shared-cache"
    trusted = make_store(run, cache_dir=cache, trust_pickles=True)
    pages = trusted.pass_pages(KEY)
    trusted.wait_background(20)
    assert read_page(pages, pages.pages[0][0]).values[3]["extra"] == os.getcwd()
    assert [p.name.endswith("-trusted.cols") for p in _columns_files(cache)] == [True]
    careful = make_store(run, cache_dir=cache).pass_pages(KEY)  # the same cache, without trust
    with pytest.raises(UntrustedPickleError, match="page_0.pkl.*posix.getcwd"):
        read_page(careful, careful.pages[0][0], select={"dbg": None})


def test_the_file_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    page = tmp_path / "page.pkl"
    joblib.dump({i: _datapoint(i) for i in range(N)}, page)
    data = page.read_bytes()
    stat_page = PageBuffer(data, _Stat(len(data)), str(page))
    columns = build_columns(parse_page(stat_page, str(page), trust=False).content)
    again = decode(encode(columns), "x")
    assert again.paths == columns.paths and again.forms == columns.forms and again.layouts == columns.layouts
    np.testing.assert_array_equal(again.offsets, columns.offsets)
    for rows in (list(range(N)), [5, 0]):
        _identical(again.values(data, "x", rows, None), columns.values(data, "x", rows, None))
    blob = encode(columns)
    for damaged in (b"NOTCOLS\n" + blob[8:], blob[:-8], blob[:20] + b"{" + blob[21:]):
        with pytest.raises(ValueError):
            decode(damaged, "x")


class _Stat:
    """The least a PageBuffer needs of a stat."""

    def __init__(self, size: int) -> None:
        self.size, self.version = size, "v"


class _Counting(LocalSource):
    """A local log dir that counts the page bytes read from it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.bytes_read = 0

    def open(self, rel: str) -> Any:
        fobj = super().open(rel)
        read_at, read_into = fobj.read_at, fobj.read_into

        def counted_at(offset: int, n: int) -> bytes:
            data = read_at(offset, n)
            self.bytes_read += len(data)
            return data

        def counted_into(offset: int, view: memoryview) -> int:
            got = read_into(offset, view)
            self.bytes_read += got
            return got

        fobj.read_at, fobj.read_into = counted_at, counted_into  # type: ignore[method-assign]
        return fobj


def test_a_part_of_a_page_reads_about_its_own_bytes(tmp_path: Path, make_store: Callable[..., LogStore]) -> None:
    """With the page's columns, reading some of its datapoints reads the bytes of their arrays (and what lies
    between them), not the page: what lets a job split a page into parts (workers.page_parts)."""
    def content(i: int) -> dict[str, Any]:
        return {"dbg": {"x": np.full(50_000, i, dtype=np.float32)}}  # 200 kB a datapoint

    run = _write(tmp_path, content)
    store = make_store(run)
    pages = store.pass_pages(KEY)
    store.wait_background(20)
    counting = _Counting(run)
    pages = replace(pages, source=counting)
    rel = pages.pages[0][0]
    size = (run / rel).stat().st_size
    got = read_page(pages, rel, indices={4})
    np.testing.assert_array_equal(got.values[4]["dbg"]["x"], np.full(50_000, 4, dtype=np.float32))
    assert list(got.values) == [4] and counting.bytes_read == 200_000 < size / 5
    counting.bytes_read = 0
    with reused_buffers():
        got = read_page(pages, rel, indices={1, 2})
        assert sorted(got.values) == [1, 2] and float(got.values[2]["dbg"]["x"][0]) == 2.0
    assert 400_000 <= counting.bytes_read < size / 2
