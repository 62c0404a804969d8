"""Symbolic links in a local log dir: those leading out are not followed (unless asked), loops end, and a run reached
two ways (a link, or two --log-dir naming it) is listed once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend_logs import N, scores_payload, write_json, write_pages
from eval_viewer.backend import LogStore
from eval_viewer.errors import LogDirError
from eval_viewer.log_format import DEBUGGER_DIR, VALIDATION_SCORES, epoch_dir_name


def _run(root: Path) -> Path:
    write_json(root / epoch_dir_name(0) / VALIDATION_SCORES, scores_payload(N, 0))
    write_pages(root / epoch_dir_name(0) / DEBUGGER_DIR, range(N), per_page=N)
    return root


def test_links_out_of_the_log_dir_are_not_followed_unless_asked(tmp_path: Path) -> None:
    outside = _run(tmp_path / "secret" / "private_run")
    logs = tmp_path / "logs"
    _run(logs / "mine")
    os.symlink(outside, logs / "linked_out")
    os.symlink(tmp_path / "secret", logs / "secret_folder")
    with LogStore(logs, cache_dir=tmp_path / "c1", rescan_s=0) as store:
        assert [r.name for r in store.runs()] == ["mine"]
    with LogStore(logs, cache_dir=tmp_path / "c2", rescan_s=0, follow_symlinks=True) as store:
        assert {r.name for r in store.runs()} == {"mine", "linked_out"}  # the same run reached twice: listed once


def test_a_file_swapped_for_a_link_out_is_not_read(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    _run(logs / "mine")
    (tmp_path / "elsewhere.json").write_text('{"aggregated": {}, "per_datapoint": {"x": [1]}}')
    with LogStore(logs, cache_dir=tmp_path / "c", rescan_s=0) as store:
        key = store.default_pass("mine")
        scores = logs / "mine" / epoch_dir_name(0) / VALIDATION_SCORES
        scores.unlink()
        os.symlink(tmp_path / "elsewhere.json", scores)
        store.refresh()
        with pytest.raises(Exception) as err:  # not listed any more, or refused when opened
            store.scores(key)
        assert "elsewhere" not in str(err.value) or "not followed" in str(err.value)


def test_link_loops_end_and_each_real_run_is_listed_once(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    _run(logs / "a" / "run")
    for i in range(6):  # the case: six self-links made 9,331 duplicate runs
        os.symlink(logs, logs / f"self{i}")
    os.symlink(logs / "a", logs / "a" / "loop")
    with LogStore(logs, cache_dir=tmp_path / "c", rescan_s=0) as store:
        assert [r.name for r in store.runs()] == ["a/run"]


def test_the_same_log_dir_twice_is_one_set_of_runs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    _run(logs / "r1")
    os.symlink(logs, tmp_path / "alias")
    with LogStore([logs, tmp_path / "alias", logs / "r1"], cache_dir=tmp_path / "c", rescan_s=0) as store:
        assert [r.name for r in store.runs()] == ["r1"]


def test_a_log_dir_that_is_itself_a_link_is_served(tmp_path: Path) -> None:
    _run(tmp_path / "real" / "r1")
    os.symlink(tmp_path / "real", tmp_path / "link")
    with LogStore(tmp_path / "link", cache_dir=tmp_path / "c", rescan_s=0, index_wait_s=10) as store:
        key = store.default_pass("r1")
        assert store.datapoint(key, 0).debug
    with pytest.raises(LogDirError):
        LogStore(tmp_path / "missing", cache_dir=tmp_path / "c", rescan_s=0)
