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
    state = ViewState(run="a/b c", split="val", step=3, metric="iou[1]", idx=7)
    assert parse_query(to_query(state)) == state
    assert to_query(state) == "?run=a%2Fb+c&split=val&epoch=3&metric=iou%5B1%5D&idx=7"
    test = ViewState(run="r", split="test", metric="m", idx=2)
    assert to_query(test) == "?run=r&split=test&metric=m&idx=2" and parse_query(to_query(test)) == test
    other = ViewState(run="r", split="train", step=500)
    assert to_query(other) == "?run=r&split=train&step=500" and parse_query(to_query(other)) == other
    assert to_query(ViewState(run="r", metric="m")) == "?run=r&metric=m"
    assert to_query(ViewState()) == ""
    with pytest.raises(NotFoundError, match="idx"):
        parse_query("?run=r&idx=seven")


def test_resolve_fills_defaults_and_checks_a_shared_link(store: LogStore) -> None:
    resolved = resolve(store, ViewState())
    assert resolved.state == ViewState(run="ref_run", split="val", step=REFERENCE_EPOCHS[-1], metric="iou", idx=None)
    with pytest.raises(NotFoundError, match="no pass val step 1"):
        resolve(store, ViewState(run="ref_run", split="val", step=1))
    with pytest.raises(NotFoundError, match="no pass test"):
        resolve(store, ViewState(run="ref_run", split="test"))
    with pytest.raises(NotFoundError, match="datapoint"):
        resolve(store, ViewState(run="ref_run", idx=REFERENCE_N))
    with pytest.raises(NotFoundError):
        resolve(store, ViewState(run="../../etc"))
    lenient = resolve(store, ViewState(run="nope", split="val", step=1, metric="nope", idx=99), strict=False)
    assert lenient.state == ViewState(run="ref_run", split="val", step=REFERENCE_EPOCHS[-1], metric="iou", idx=None)


def test_links_from_before_splits_still_open_their_pass() -> None:
    assert parse_query("?run=r&epoch=4&idx=1") == ViewState(run="r", split="val", step=4, idx=1)
    assert parse_query("?run=evaluator&idx=1") == ViewState(run="evaluator", idx=1)  # resolved to its test pass


def test_a_trainer_with_a_final_evaluation_has_both_passes_each_with_its_url(tmp_path: Path) -> None:
    log_dir = write_reference_log(tmp_path / "logs")
    run_dir = log_dir / "ref_run"
    (run_dir / "evaluation_scores.json").write_text((run_dir / "epoch_0" / "validation_scores.json").read_text())
    with LogStore([log_dir], cache_dir=tmp_path / "cache", rescan_s=0) as store:
        default = resolve(store, ViewState(run="ref_run"))
        assert (default.state.split, default.state.step) == ("val", REFERENCE_EPOCHS[-1])  # not the test pass
        test = resolve(store, parse_query("?run=ref_run&split=test&idx=3"))
        assert (test.state.split, test.state.step, test.state.idx) == ("test", None, 3)
        assert resolve(store, parse_query(to_query(test.state))).state == test.state  # its URL reopens it
        old_link = resolve(store, parse_query(f"?run=ref_run&epoch={REFERENCE_EPOCHS[0]}"))
        assert (old_link.state.split, old_link.state.step) == ("val", REFERENCE_EPOCHS[0])


def test_position_walks_the_worst_first_ranking(store: LogStore) -> None:
    scores = store.scores(("ref_run", "val", REFERENCE_EPOCHS[-1]))
    order = [int(i) for i in scores.ranking("iou")]
    assert order[0] == 5  # the missing iou ranks worst
    first, second, last = position(scores, "iou", order[0]), position(scores, "iou", order[1]), position(
        scores, "iou", order[-1])
    assert (first.rank, first.prev_idx, first.next_idx) == (1, None, order[1])
    assert (second.rank, second.prev_idx, second.next_idx) == (2, order[0], order[2])
    assert (last.rank, last.total, last.next_idx) == (REFERENCE_N, REFERENCE_N, None)
