"""The page-level bulk reader (eval_viewer.backend.bulk): a whole pass read page by page, each page once, with the
same safety as a single read, arrays as views of the page's one buffer, and a bad page costing only its own datapoints.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.bulk import iter_datapoints, iter_pages, read_page, reused_buffers
from eval_viewer.errors import PageError, UntrustedPickleError
from eval_viewer.log_format import DEBUGGER_DIR, EVALUATION_SCORES, index_name

from backend_logs import N, scores_payload, write_json, write_pages
from hostile import Call, write_run

KEY = PassKey("evaluator", "test")


def _evaluator(root: Path, per_page: int = 4) -> Path:
    run = root / "evaluator"
    write_json(run / EVALUATION_SCORES, scores_payload(N, 0))
    write_pages(run / DEBUGGER_DIR, range(N), per_page=per_page, epoch=None, with_index=True)
    return run


def _same(read: Any, written: Any) -> None:
    if isinstance(written, dict):
        assert set(read) == set(written)
        for key in written:
            _same(read[key], written[key])
    elif isinstance(written, np.ndarray):
        np.testing.assert_array_equal(read, written)
        assert read.dtype == written.dtype
    else:
        assert read == written


def test_every_datapoint_read_once_per_page_as_written(tmp_path: Path, make_store: Callable[..., LogStore],
                                                       outputs_of: Callable[..., dict[str, Any]]) -> None:
    store = make_store(_evaluator(tmp_path))
    pages = store.pass_pages(KEY)
    assert [rel.rsplit("/", 1)[-1] for rel, _ in pages.pages] == ["page_0.pkl", "page_1.pkl", "page_2.pkl"]
    assert pages.num_datapoints == N and pages.page_of()[5].endswith("page_1.pkl")
    problems: list[str] = []
    seen = []
    for idx, value in iter_datapoints(pages, problems=problems):
        _same(value, outputs_of(idx, None))
        seen.append(idx)
    assert seen == list(range(N)) and problems == []


def test_arrays_are_read_only_views_of_one_page_buffer(tmp_path: Path, make_store: Callable[..., LogStore]) -> None:
    pages = make_store(_evaluator(tmp_path)).pass_pages(KEY)
    page = read_page(pages, pages.pages[0][0])
    maps = [page.values[i]["layer4"]["feature_map"] for i in pages.pages[0][1]]
    assert all(not m.flags.writeable for m in maps)
    owners = [_owner(m) for m in maps]
    assert len({id(o) for o in owners}) == 1 and isinstance(owners[0], bytes)
    # one read shared by every array: the whole page, or (once the background index has cached the page's columns)
    # the span from its first array to its last
    assert sum(m.nbytes for m in maps) <= len(owners[0]) <= os.path.getsize(page.name)


def _owner(array: np.ndarray) -> Any:
    """What finally holds an array's memory (views chain through ``.base``; a buffer's memoryview names it)."""
    base: Any = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def test_select_reads_only_the_asked_parts(tmp_path: Path, make_store: Callable[..., LogStore],
                                           outputs_of: Callable[..., dict[str, Any]]) -> None:
    pages = make_store(_evaluator(tmp_path)).pass_pages(KEY)
    values = dict(iter_datapoints(pages, select={"layer4": ["feature_map", "missing"], "gradcam": None}))
    assert set(values) == set(range(N))
    for idx, value in values.items():
        assert set(value) == {"layer4", "gradcam"} and set(value["layer4"]) == {"feature_map"}
        np.testing.assert_array_equal(value["gradcam"], outputs_of(idx, None)["gradcam"])


@pytest.mark.parametrize("prefetch, max_buffer", [(0, 1 << 30), (2, 1 << 30), (1, 0)])
def test_prefetch_and_page_size_paths_read_the_same(tmp_path: Path, make_store: Callable[..., LogStore],
                                                    outputs_of: Callable[..., dict[str, Any]], prefetch: int,
                                                    max_buffer: int) -> None:
    pages = make_store(_evaluator(tmp_path)).pass_pages(KEY)
    got = {}
    for page in iter_pages(pages, prefetch=prefetch, max_buffer=max_buffer):
        got.update(page.values)
    assert sorted(got) == list(range(N))
    for idx, value in got.items():
        _same(value, outputs_of(idx, None))


def test_corrupt_page_in_the_middle_is_a_problem_naming_it(tmp_path: Path, make_store: Callable[..., LogStore],
                                                           outputs_of: Callable[..., dict[str, Any]]) -> None:
    run = _evaluator(tmp_path)
    middle = run / DEBUGGER_DIR / "page_1.pkl"
    middle.write_bytes(middle.read_bytes()[: middle.stat().st_size // 2])  # truncated after it was indexed
    pages = make_store(run).pass_pages(KEY)
    problems: list[str] = []
    seen = {idx: value for idx, value in iter_datapoints(pages, problems=problems)}
    assert sorted(seen) == [0, 1, 2, 3, 8, 9, 10, 11]
    for idx, value in seen.items():
        _same(value, outputs_of(idx, None))
    assert len(problems) == 1 and str(middle) in problems[0] and "truncated" in problems[0]
    with pytest.raises(PageError, match="page_1.pkl"):
        read_page(pages, pages.pages[1][0])


def test_indices_skip_pages_without_wanted_datapoints(tmp_path: Path, make_store: Callable[..., LogStore]) -> None:
    run = _evaluator(tmp_path)
    (run / DEBUGGER_DIR / "page_1.pkl").write_bytes(b"not a pickle at all")
    problems: list[str] = []
    got = [idx for idx, _ in iter_datapoints(make_store(run).pass_pages(KEY), indices=[1, 10], problems=problems)]
    assert got == [1, 10] and problems == []  # page_1 (datapoints 4..7) was never opened


def test_hostile_page_refused_other_page_read(tmp_path: Path, make_store: Callable[..., LogStore]) -> None:
    run = tmp_path / "hostile"
    bad = write_run(run, "laughs")  # page_0: a kilobyte "billion laughs"; page_1: healthy
    write_json(bad.parent / index_name(None), {"format_version": 1, "pages": {"page_0.pkl": {"indices": [0]},
                                                                             "page_1.pkl": {"indices": [1]}}})
    problems: list[str] = []
    got = dict(iter_datapoints(make_store(run).pass_pages(PassKey("hostile", "val", 0)), problems=problems))
    assert list(got) == [1]
    np.testing.assert_array_equal(got[1]["dbg"]["x"], np.arange(4, dtype=np.float32))
    assert len(problems) == 1 and str(bad) in problems[0] and "refused" in problems[0]


def test_class_off_the_allow_list_needs_trust(tmp_path: Path, make_store: Callable[..., LogStore]) -> None:
    run = _evaluator(tmp_path, per_page=N)
    page = run / DEBUGGER_DIR / "page_0.pkl"
    content = joblib.load(page)
    content[3]["extra"] = Call(os.getcwd)  # runs os.getcwd() when unpickled: harmless, but not on the list
    joblib.dump(content, page)
    pages = make_store(run, cache_dir=tmp_path / "c1").pass_pages(KEY)
    with pytest.raises(UntrustedPickleError, match="page_0.pkl.*posix.getcwd"):
        read_page(pages, pages.pages[0][0])
    trusted = make_store(run, cache_dir=tmp_path / "c2", trust_pickles=True).pass_pages(KEY)
    values = read_page(trusted, trusted.pages[0][0]).values
    assert values[3]["extra"] == os.getcwd() and sorted(values) == list(range(N))


def test_stopping_early_ends_the_read_ahead_thread(tmp_path: Path, make_store: Callable[..., LogStore]) -> None:
    pages = make_store(_evaluator(tmp_path, per_page=2)).pass_pages(KEY)
    stop = threading.Event()
    got = []
    for idx, _ in iter_datapoints(pages, stop=stop, prefetch=2):
        got.append(idx)
        if idx == 2:
            stop.set()
    assert got == [0, 1, 2, 3]  # the page in hand is finished, no later page is
    reader = iter_datapoints(pages, prefetch=2)
    next(reader)
    reader.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("eval-viewer-bulk")]


def test_pass_without_pages_reads_nothing(tmp_path: Path, make_store: Callable[..., LogStore]) -> None:
    run = tmp_path / "bare"
    write_json(run / EVALUATION_SCORES, scores_payload(N, 0))
    pages = make_store(run).pass_pages(PassKey("bare", "test"))
    assert pages.pages == () and list(iter_datapoints(pages)) == []
    assert json.loads((run / EVALUATION_SCORES).read_text())  # untouched


def test_read_ahead_keeps_a_schedule_of_two_passes_in_step(tmp_path: Path, make_store: Callable[..., LogStore],
                                                           outputs_of: Callable[..., dict[str, Any]]) -> None:
    from functools import partial

    from eval_viewer.backend.bulk import read_ahead

    run = _evaluator(tmp_path / "one")
    (run / DEBUGGER_DIR / "page_1.pkl").write_bytes(b"\x80\x04 broken")
    other = _evaluator(tmp_path / "two", per_page=6)
    pages_a = make_store(run, cache_dir=tmp_path / "ca").pass_pages(KEY)
    pages_b = make_store(other, cache_dir=tmp_path / "cb").pass_pages(KEY)
    schedule = [(pages_a, pages_a.pages[0][0]), (pages_b, pages_b.pages[1][0]), (pages_a, pages_a.pages[1][0]),
                (pages_a, pages_a.pages[2][0])]
    got = list(read_ahead([partial(read_page, p, rel, select={"gradcam": None}) for p, rel in schedule], prefetch=2))
    assert [type(g).__name__ for g in got] == ["Page", "Page", "PageError", "Page"]
    assert sorted(got[1].values) == list(range(6, 12)) and "page_1.pkl" in str(got[2])
    np.testing.assert_array_equal(got[3].values[9]["gradcam"], outputs_of(9, None)["gradcam"])


def test_a_job_task_reads_its_pages_into_buffers_it_reuses(tmp_path: Path, make_store: Callable[..., LogStore],
                                                           outputs_of: Callable[..., dict[str, Any]]) -> None:
    """Inside ``reused_buffers`` each page goes into a buffer the thread keeps for its next block (no fresh memory per
    page), its arrays are read-only views of it, and what is read is right; outside, every page gets its own bytes."""
    store = make_store(_evaluator(tmp_path, per_page=4))
    pages = store.pass_pages(KEY)
    assert store.wait_background(20)  # every page's columns cached: each read is the same span (a page read whole
    pages = store.pass_pages(KEY)  # before its columns were, and a span after, needed two buffers: a race)
    buffers = []
    for rel, indices in pages.pages + pages.pages:
        with reused_buffers():
            values = read_page(pages, rel).values
            for idx in indices:
                _same(values[idx], outputs_of(idx, None))
            array = values[indices[0]]["layer4"]["feature_map"]
            assert isinstance(array.base, bytearray) and not array.flags.writeable
            with pytest.raises(ValueError):
                array[...] = 0
            buffers.append(array.base)
    assert len({id(b) for b in buffers}) == 1  # (the pages are the same size here: one buffer for all six reads)
    outside = read_page(pages, pages.pages[0][0]).values
    assert isinstance(outside[0]["layer4"]["feature_map"].base, bytes)
