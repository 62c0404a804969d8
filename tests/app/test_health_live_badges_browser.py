"""A health summary that finishes while a datapoint is open brings its pass-level badges to that view, in headless
Chromium, without drawing the view again.

Ordering is made certain with the real job runner: health summaries run one at a time, so the test first starts a
summary of its own (the same pass measured with another ``min_values``, a real computation, the job
``HealthJobs.start`` would begin for it) that waits for the test's word; the summary the overview starts queues
behind it. The datapoint is opened from the table meanwhile, so it is drawn from
its record alone: its layer3 card has the NaN badge, but the aux_relu card cannot yet say that aux.1's channels are
dead on *every* datapoint (:mod:`health_run` makes that ReLU dead). Then the test lets the summaries run."""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from app_steps import click_table_row, url_state, wait_for_datapoint
from eval_viewer.app import ids
from eval_viewer.backend import PassKey
from eval_viewer.backend.health import HealthThresholds
from eval_viewer.backend.health_summary import HealthJobs, compute_health

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))
from health_run import N, write_health_run  # noqa: E402  (a backend test helper: the capture run)

pytestmark = pytest.mark.browser

AUX = f"#{ids.DATAPOINT_BODY} .ev-card[data-debugger='aux_relu']"
_RECORD = """
window.__evOutputs = [];
const fetch0 = window.fetch;
window.fetch = function (url, options) {
  if (String(url).includes('_dash-update-component') && options && options.body) {
    window.__evOutputs.push(JSON.parse(options.body).output);
  }
  return fetch0.apply(this, arguments);
};
"""


def test_pass_level_badges_appear_on_the_open_datapoint(dash_duo, serve, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_health_run(logs / "planted", epochs=1)
    key = PassKey("planted", "val", 0)
    store = serve([logs], query="?run=planted&metric=loss&idx=0")  # a datapoint link: no summary started yet
    jobs = HealthJobs.of(store)
    go = threading.Event()
    other = dataclasses.replace(HealthThresholds(), min_values=8)  # a measured field: a job of its own

    def first(progress, stop):  # noqa: ANN001, ANN202
        go.wait(60)
        return compute_health(store, key, other, progress, stop)

    jobs.begin(jobs.job_key(key, other), first, "the test's summary")
    try:
        wait_for_datapoint(dash_duo, 0)
        dash_duo.find_element(f"#{ids.BACK}").click()  # the overview starts this pass's summary: it queues
        dash_duo.wait_for_contains_text(f"#{ids.HEALTH_PROGRESS}", "checking", timeout=15)
        dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{N} datapoints", timeout=15)
        idx = int(click_table_row(dash_duo, 0))
        wait_for_datapoint(dash_duo, idx)
        assert jobs.ready(key) is None  # still queued: the view was drawn from the record alone
        assert dash_duo.find_elements(f"{AUX} .ev-health-dead_channel") == []
        dash_duo.driver.execute_script(_RECORD)
    finally:
        go.set()
    badge = dash_duo.wait_for_element(f"{AUX} .ev-health-badge.ev-health-dead_channel", timeout=30)
    assert badge.text == "⚠ dead channels 100 %"
    assert dash_duo.find_element(f"{AUX} .ev-health-badge.ev-health-dead").text == "⚠ dead 100 %"
    outputs = dash_duo.driver.execute_script("return window.__evOutputs")
    assert any(ids.CARD_BADGES_TYPE in out for out in outputs)
    assert not any(ids.DATAPOINT_BODY in out for out in outputs)  # the view itself was not drawn again
    assert url_state(dash_duo)["idx"] == str(idx)
    assert dash_duo.get_logs() == []
