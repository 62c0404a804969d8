"""Logs on object storage: the same runs, scores, datapoints and errors through ``s3://`` as from the local disk.

A log written by our own capture code (the example run) and a log in the plain reference layout (joblib pages, no
index) are uploaded to a loopback S3 server and opened with ``eval_viewer.open`` and ``LogStore``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import eval_viewer
from eval_viewer.backend import LogStore
from eval_viewer.backend import sources
from eval_viewer.backend.sources import FsspecSource
from eval_viewer.errors import LogDirError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))  # the app tests' reference-layout writer
from app_logs import REFERENCE_EPOCHS, write_reference_log  # noqa: E402


def _same_value(a: object, b: object) -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            _same_value(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _same_value(x, y)
    else:
        assert a == b or (a != a and b != b)  # NaN equals NaN here


def _same_record(local: eval_viewer.Datapoint, remote: eval_viewer.Datapoint) -> None:
    assert local.scores.keys() == remote.scores.keys()
    _same_value(dict(local.scores), dict(remote.scores))
    assert [(s, d, i.key, i.kind) for s, d, i in local.record.items()] == \
        [(s, d, i.key, i.kind) for s, d, i in remote.record.items()]
    for (_, _, a), (_, _, b) in zip(local.record.items(), remote.record.items()):
        _same_value(a.value, b.value)
    _same_value(dict(local.record.meta_info), dict(remote.record.meta_info))
    assert local.problems == remote.problems == ()


def test_our_capture_and_a_reference_log_read_the_same_through_s3(s3, upload, bucket: str, example_copy: Path,
                                                                    tmp_path: Path) -> None:
    reference = write_reference_log(tmp_path / "reference")
    ours_url = upload(example_copy, f"s3://{bucket}/group/example")
    ref_url = upload(reference, f"s3://{bucket}/group/reference")
    with eval_viewer.open(example_copy, reference, cache_dir=tmp_path / "local-cache") as local, \
            eval_viewer.open(ours_url, ref_url, cache_dir=tmp_path / "remote-cache") as remote:
        assert [(r.name, r.kind, [p.key for p in r.passes]) for r in local.runs] == \
            [(r.name, r.kind, [p.key for p in r.passes]) for r in remote.runs]
        assert {r.name for r in remote.runs} == {"trainer_run", "evaluator_run", "quantized_run", "ref_run"}
        assert remote.run("ref_run").location == f"{ref_url}/ref_run"
        for key in [remote.pass_("trainer_run"), remote.pass_("evaluator_run"), remote.pass_("ref_run"),
                    remote.pass_("ref_run", "val", REFERENCE_EPOCHS[0])]:
            metric = remote.metrics(key)[0]
            np.testing.assert_array_equal(local.ranking(key, metric), remote.ranking(key, metric))
            worst, best = (int(i) for i in remote.ranking(key, metric)[[0, -1]])
            for idx in (worst, best):
                _same_record(local.datapoint(key, idx), remote.datapoint(key, idx))
        assert remote.meta_table(remote.pass_("ref_run")) == local.meta_table(local.pass_("ref_run"))


def test_one_remote_datapoint_costs_about_its_own_bytes(s3, upload, bucket: str, example_copy: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages are read with range requests for the datapoint's arrays, never whole (the pages hold 48 datapoints)."""
    url = upload(example_copy, f"s3://{bucket}/example")
    fetched: list[int] = []
    read_at = sources._FsspecFile.read_at  # noqa: SLF001 - counted, then called as is: every range request of a page

    def counting_read_at(self, offset: int, n: int) -> bytes:  # noqa: ANN001
        data = read_at(self, offset, n)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(sources._FsspecFile, "read_at", counting_read_at)  # noqa: SLF001
    with LogStore([url], cache_dir=tmp_path / "cache", rescan_s=0) as store:
        key = store.default_pass("trainer_run")
        store.scores(key)
        assert store.wait_for_index(key, timeout=60) and store.wait_background(timeout=60)  # skeletons built once
        store.clear_cache()
        fetched.clear()
        record = store.datapoint(key, 7)
    page_bytes = sum(s3.size(p) for p in s3.find(f"{bucket}/example/trainer_run/epoch_9/debugger")
                     if p.endswith(".pkl"))
    own = sum(i.value.nbytes for _, _, i in record.items() if isinstance(i.value, np.ndarray))
    assert fetched and sum(fetched) < page_bytes / 10
    assert sum(fetched) >= own  # every array of it was really read


def test_corrupt_and_missing_objects_say_the_same_as_local_files(s3, upload, bucket: str, tmp_path: Path) -> None:
    reference = write_reference_log(tmp_path / "reference")
    debug = reference / "ref_run" / "epoch_2" / "debugger"
    (debug / "page_1.pkl").write_bytes((debug / "page_1.pkl").read_bytes()[:300])  # truncated mid-write
    url = upload(reference, f"s3://{bucket}/reference")
    messages = {}
    for where, log_dir in (("local", str(reference)), ("remote", url)):
        with LogStore([log_dir], cache_dir=tmp_path / f"cache-{where}", rescan_s=0) as store:
            key = ("ref_run", "val", 2)
            store.scores(key)
            store.wait_for_index(key, timeout=60)
            corrupt = store.datapoint(key, 7).problems  # idx 7 lives in the truncated page_1
            if where == "local":
                (debug / "page_2.pkl").unlink()
            else:
                s3.rm_file(f"{bucket}/reference/ref_run/epoch_2/debugger/page_2.pkl")
            missing = store.datapoint(key, 11).problems  # page_2 went away after it was listed
            # the same text but for where the log is and how many seconds ago its newest page was written
            messages[where] = [re.sub(r"written \d+ s ago", "written N s ago", m.replace(log_dir, "LOG"))
                               for m in (*corrupt, *missing)]
    assert messages["local"] == messages["remote"]
    assert any("LOG/ref_run/epoch_2/debugger/page_1.pkl: truncated" in m for m in messages["remote"])
    assert any("LOG/ref_run/epoch_2/debugger/page_2.pkl: page is missing" in m for m in messages["remote"])


def test_a_bucket_prefix_that_holds_nothing_is_a_clear_error(s3, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(LogDirError, match=f"s3://{bucket}/nothing-here: log dir does not exist"):
        LogStore([f"s3://{bucket}/nothing-here"], cache_dir=tmp_path / "cache")
    s3.pipe_file(f"{bucket}/notes/readme.txt", b"no runs here")
    with pytest.raises(LogDirError, match="no run found"):
        LogStore([f"s3://{bucket}/notes"], cache_dir=tmp_path / "cache")
    files, dirs = FsspecSource(f"s3://{bucket}/notes").list("")
    assert list(files) == ["readme.txt"] and files["readme.txt"].size == len(b"no runs here") and dirs == []
