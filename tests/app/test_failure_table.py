"""The failure table's data kept per selection: built once, rebuilt when the scores file changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app_logs import REFERENCE_EPOCHS, REFERENCE_N, reference_scores, write_reference_log
from eval_viewer.app.failure_table import TableCache
from eval_viewer.app.state import ViewState
from eval_viewer.app.table_query import query, row_dicts
from eval_viewer.backend import LogStore
from eval_viewer.log_format import VALIDATION_SCORES, epoch_dir_name


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return write_reference_log(tmp_path / "logs")


def test_tables_are_kept_per_selection_and_rebuilt_when_the_scores_change(log_dir: Path, tmp_path: Path) -> None:
    epoch = REFERENCE_EPOCHS[-1]
    with LogStore([log_dir], cache_dir=tmp_path / "cache") as store:
        store.wait_for_index(("ref_run", "val", epoch), timeout=60)
        tables = TableCache(store)
        by_iou = tables.get(ViewState(run="ref_run", split="val", step=epoch, metric="iou"))
        assert tables.get(ViewState(run="ref_run", split="val", step=epoch, metric="iou", idx=3)) is by_iou
        assert query(by_iou.table, 0, 1).rows.tolist() == [5]  # the datapoint without an iou ranks worst
        assert set(by_iou.meta) == {"source", "difficulty"}  # the recorder's idx repeats the index: not a column

        loss = reference_scores(log_dir, epoch)["loss"]
        by_loss = tables.get(ViewState(run="ref_run", split="val", step=epoch, metric="loss"))
        worst_loss = max(range(REFERENCE_N), key=lambda i: loss[i])
        assert query(by_loss.table, 0, 1).rows.tolist() == [worst_loss]

        path = log_dir / "ref_run" / epoch_dir_name(epoch) / VALIDATION_SCORES
        scores = json.loads(path.read_text())
        scores["per_datapoint"]["loss"][0] = 99.0  # now the worst by far
        path.write_text(json.dumps(scores))
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime even on a coarse clock
        store.refresh()  # what the background refresher does every few seconds
        rebuilt = tables.get(ViewState(run="ref_run", split="val", step=epoch, metric="loss"))
        assert rebuilt is not by_loss
        first = row_dicts(rebuilt.table, query(rebuilt.table, 0, 1).rows)[0]
        assert (first["idx"], first["m1"]) == (0, 99.0)
