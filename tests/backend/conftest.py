"""Fixtures of hand-made logs in the plain reference layout (joblib pages, scores JSON), written into ``tmp_path``.

Pages are written with plain ``joblib.dump`` and no index unless a test asks for one, the way other tools write them;
the writers themselves are in :mod:`backend_logs`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest

from eval_viewer.backend import LogStore
from eval_viewer.log_format import DEBUGGER_DIR, EVALUATION_SCORES, VALIDATION_SCORES, epoch_dir_name

from backend_logs import N, datapoint_outputs, scores_payload, write_json, write_pages


@pytest.fixture
def trainer_run(tmp_path: Path) -> Path:
    """logs/trainer: epochs 0, 2 (gap), 10; debug pages without index in 0 and 10 (10 has 3 pages), none in 2."""
    run = tmp_path / "logs" / "trainer"
    for epoch in (0, 2, 10):
        write_json(run / epoch_dir_name(epoch) / VALIDATION_SCORES, scores_payload(N, epoch))
    write_pages(run / epoch_dir_name(0) / DEBUGGER_DIR, range(N), per_page=N)
    write_pages(run / epoch_dir_name(10) / DEBUGGER_DIR, range(N), per_page=5, epoch=10)
    (run / epoch_dir_name(3)).mkdir()  # a folder with no scores and no pages is not an epoch
    (run / "checkpoints").mkdir()
    return run


@pytest.fixture
def evaluator_run(tmp_path: Path) -> Path:
    run = tmp_path / "logs" / "group" / "evaluator"
    write_json(run / EVALUATION_SCORES, scores_payload(N, 0))
    write_pages(run / DEBUGGER_DIR, range(N), per_page=4, epoch=None, with_index=True,
                kinds={"layer4": {"feature_map": "feature_map", "layer_name": "text"}})
    return run


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[..., LogStore]]:
    """LogStore factory with its index cache in tmp_path; every store made is closed after the test.

    Tests read debug outputs right after opening a store, so reads wait for the background index (``index_wait_s``;
    the store's own default, 0, answers "still indexing" at once: see test_snapshot.py). The listing snapshot is only
    renewed by ``store.refresh()`` (``rescan_s=0``), so what a test sees never depends on a background timer.
    """
    stores: list[LogStore] = []

    def make(*log_dirs: Path | str, **kwargs: Any) -> LogStore:
        kwargs.setdefault("cache_dir", tmp_path / "cache")
        kwargs.setdefault("index_wait_s", 20.0)
        kwargs.setdefault("rescan_s", 0.0)
        store = LogStore(list(log_dirs), **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def outputs_of() -> Callable[..., dict[str, Any]]:
    """The outputs the hand-made logs hold for a datapoint (to compare reads against)."""
    return datapoint_outputs


@pytest.fixture
def pages_writer() -> Callable[..., dict[str, list[int]]]:
    return write_pages


@pytest.fixture
def scores_writer() -> Callable[..., Path]:
    def write(path: Path, n: int = N, epoch: int = 0, **kwargs: Any) -> Path:
        return write_json(path, scores_payload(n, epoch, **kwargs))

    return write
