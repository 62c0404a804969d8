"""The URL <-> view state contract, without a browser: what a shared link means."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_viewer.app.state import ViewState, parse_query, position, resolve, to_query
from eval_viewer.backend import LogStore
from eval_viewer.errors import NotFoundError

from app_logs import REFERENCE_EPOCHS, REFERENCE_N, write_reference_log


@pytest.fixture
def store(tmp_path: Path) -> LogStore:
    with LogStore([write_reference_log(tmp_path / "logs")], cache_dir=tmp_path / "cache") as store:
        yield store


def test_query_round_trip_keeps_order_and_drops_unset() -> None:
    state = ViewState(run="a/b c", epoch=3, metric="iou[1]", idx=7)
    assert parse_query(to_query(state)) == state
    assert to_query(ViewState(run="r", metric="m")) == "?run=r&metric=m"
    assert to_query(ViewState()) == ""
    with pytest.raises(NotFoundError, match="idx"):
        parse_query("?run=r&idx=seven")


def test_resolve_fills_defaults_and_checks_a_shared_link(store: LogStore) -> None:
    resolved = resolve(store, ViewState())
    assert resolved.state == ViewState(run="ref_run", epoch=REFERENCE_EPOCHS[-1], metric="iou", idx=None)
    with pytest.raises(NotFoundError, match="epoch"):
        resolve(store, ViewState(run="ref_run", epoch=1))
    with pytest.raises(NotFoundError, match="datapoint"):
        resolve(store, ViewState(run="ref_run", idx=REFERENCE_N))
    with pytest.raises(NotFoundError):
        resolve(store, ViewState(run="../../etc"))
    lenient = resolve(store, ViewState(run="nope", epoch=1, metric="nope", idx=99), strict=False)
    assert lenient.state == ViewState(run="ref_run", epoch=REFERENCE_EPOCHS[-1], metric="iou", idx=None)


def test_position_walks_the_worst_first_ranking(store: LogStore) -> None:
    scores = store.scores("ref_run", REFERENCE_EPOCHS[-1])
    order = [int(i) for i in scores.ranking("iou")]
    assert order[0] == 5  # the missing iou ranks worst
    first, second, last = position(scores, "iou", order[0]), position(scores, "iou", order[1]), position(
        scores, "iou", order[-1])
    assert (first.rank, first.prev_idx, first.next_idx) == (1, None, order[1])
    assert (second.rank, second.prev_idx, second.next_idx) == (2, order[0], order[2])
    assert (last.rank, last.total, last.next_idx) == (REFERENCE_N, REFERENCE_N, None)
