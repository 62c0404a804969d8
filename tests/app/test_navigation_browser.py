"""Navigation that follows what the user sees, in headless Chromium: ← → walk the table's filter and sort; switching
to a run whose datapoint differs says so; a bad link is reported and ignored as a whole.

Expected values come from the reference log's own JSON and meta (``source`` is ``shard_{idx % 3}``), never from the
app's code."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import joblib
import pytest
from selenium.webdriver.common.keys import Keys

from app_logs import REFERENCE_EPOCHS, REFERENCE_N, reference_scores
from app_steps import click_table_row, filter_table, url_state, wait_for_datapoint
from eval_viewer.app import ids

pytestmark = pytest.mark.browser


def _worst_first(values: list[float | None]) -> list[int]:
    def key(i: int) -> tuple[int, float, int]:
        v = values[i]
        return (0, 0.0, i) if v is None or math.isnan(v) else (1, v, i)

    return sorted(range(len(values)), key=key)


def test_arrows_walk_the_filtered_table(dash_duo, serve, reference_log: Path) -> None:
    serve([reference_log], query="?run=ref_run&metric=iou")
    scores = reference_scores(reference_log, REFERENCE_EPOCHS[-1])
    dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{REFERENCE_N} datapoints", timeout=15)
    ranking = _worst_first(scores["iou"])
    rows = [i for i in ranking if i % 3 == 1]  # the filtered rows, in the table's order
    # somewhere along them the ranking's next datapoint is another shard's: landing on rows[k + 1] then can only
    # come from the filter
    assert any(ranking[ranking.index(a) + 1] != b for a, b in zip(rows, rows[1:]))
    filter_table(dash_duo, "source", "shard_1")
    dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{len(rows)} of {REFERENCE_N} datapoints match",
                                    timeout=15)
    dash_duo.wait_for_text_to_equal(
        f"#{ids.TABLE} .ag-pinned-left-cols-container .ag-row[row-index='0'] [col-id='idx']", str(rows[0]))

    assert int(click_table_row(dash_duo, 0)) == rows[0]
    wait_for_datapoint(dash_duo, rows[0])
    dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"row 1 of {len(rows)}")
    for k, idx in enumerate(rows[1:], start=2):
        dash_duo.find_element("body").send_keys(Keys.ARROW_RIGHT)
        wait_for_datapoint(dash_duo, idx)
        assert url_state(dash_duo)["idx"] == str(idx)
        dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"row {k} of {len(rows)}")
    assert dash_duo.find_element(f"#{ids.NEXT}").get_attribute("disabled")  # the last filtered row: no further
    dash_duo.find_element(f"#{ids.PREV}").click()
    wait_for_datapoint(dash_duo, rows[-2])
    assert dash_duo.get_logs() == []


def _other_run(logs: Path) -> None:
    """A copy of ``ref_run`` named ``other_run`` whose datapoint 3 is another image (another ``source``)."""
    shutil.copytree(logs / "ref_run", logs / "other_run")
    for page in (logs / "other_run").glob("epoch_*/debugger/page_*.pkl"):
        datapoints = joblib.load(page)
        for idx, outputs in datapoints.items():
            if idx == 3:
                outputs["datapoint_recorder"]["meta_info"]["source"] = "elsewhere"
        joblib.dump(datapoints, page)


def test_switching_to_a_run_whose_datapoint_differs_says_so(dash_duo, serve, reference_log: Path) -> None:
    _other_run(reference_log)
    store = serve([reference_log], query="?run=ref_run&metric=iou&idx=3")
    for run in ("ref_run", "other_run"):  # meta info is known once a log without index.json has been indexed
        store.meta_table((run, "val", REFERENCE_EPOCHS[-1]))
        assert store.wait_for_index((run, "val", REFERENCE_EPOCHS[-1]), timeout=30)
    wait_for_datapoint(dash_duo, 3)
    dash_duo.select_dcc_dropdown(f"#{ids.RUN}", value="other_run")
    dash_duo.wait_for_contains_text(f"#{ids.NOTICE}", "Not the same datapoint", timeout=15)
    dash_duo.wait_for_contains_text(f"#{ids.NOTICE}", "source", timeout=5)
    assert url_state(dash_duo)["run"] == "other_run" and "idx" not in url_state(dash_duo)
    dash_duo.wait_for_element(f"#{ids.OVERVIEW_VIEW}:not([hidden])", timeout=10)

    dash_duo.driver.get(f"{dash_duo.server_url}/?run=ref_run&metric=iou&idx=4")  # the same datapoint in both runs
    wait_for_datapoint(dash_duo, 4)
    dash_duo.select_dcc_dropdown(f"#{ids.RUN}", value="other_run")
    dash_duo._wait_for(lambda _: url_state(dash_duo).get("run") == "other_run", timeout=10, msg="no switch")
    wait_for_datapoint(dash_duo, 4)
    assert url_state(dash_duo)["idx"] == "4"
    assert dash_duo.find_element(f"#{ids.NOTICE}").text == ""
    assert dash_duo.get_logs() == []


def test_a_bad_link_is_reported_and_ignored_as_a_whole(dash_duo, serve, reference_log: Path) -> None:
    serve([reference_log], query="?run=ref_run&epoch=0&metric=no_such_metric&idx=3")
    dash_duo.wait_for_contains_text(f"#{ids.NOTICE}", "no_such_metric", timeout=15)
    dash_duo.wait_for_contains_text(f"#{ids.NOTICE}", "ignored", timeout=5)
    dash_duo._wait_for(lambda _: "idx" not in url_state(dash_duo), timeout=10, msg="the bad link was half applied")
    state = url_state(dash_duo)
    assert state["epoch"] == str(REFERENCE_EPOCHS[-1]) and state["metric"] == "iou"  # the defaults, not epoch 0
    dash_duo.wait_for_element(f"#{ids.OVERVIEW_VIEW}:not([hidden])", timeout=10)
    assert dash_duo.get_logs() == []
