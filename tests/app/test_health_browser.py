"""Health in headless Chromium: the overview's health summary lists a run with planted problems (written by our own
capture code, :mod:`health_run`); one click on "NaN at backbone.layer3" filters the failure table to exactly the
poisoned datapoints, a row opens one whose layer3 card carries the NaN badge, and → walks only the filtered rows.

Expected values come from the planted run's definition (``POISONED``), never from the app's code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from selenium.webdriver.common.keys import Keys

from app_steps import click_table_row, url_state, wait_for_datapoint
from eval_viewer.app import ids

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))
from health_run import N, POISONED, write_health_run  # noqa: E402  (a backend test helper: the capture run)

pytestmark = pytest.mark.browser

CELL = (f"[id*='{ids.HEALTH_CELL_TYPE}'][id*='backbone.layer3'][id*='\"nan\"']")


def test_health_flag_filters_the_table_and_the_card_shows_the_badge(dash_duo, serve, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_health_run(logs / "planted", epochs=1)
    serve([logs], query="?run=planted&metric=loss")
    dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{N} datapoints", timeout=15)
    dash_duo.wait_for_element(f"#{ids.HEALTH_BODY} .ev-health-table", timeout=30)
    cell = dash_duo.find_element(f"#{ids.HEALTH_BODY} {CELL}")
    assert cell.text.startswith(f"{len(POISONED)} / {N}")

    cell.click()
    dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{len(POISONED)} of {N} datapoints match", timeout=15)
    first = int(click_table_row(dash_duo, 0))
    assert first in POISONED
    wait_for_datapoint(dash_duo, first)
    card = dash_duo.find_element(f"#{ids.DATAPOINT_BODY} .ev-card[data-debugger='layer3']")
    badge = card.find_element("css selector", ".ev-health-badge.ev-health-nan")
    assert badge.text == "⚠ NaN 100 %"
    later = dash_duo.find_element(f"#{ids.DATAPOINT_BODY} .ev-card[data-debugger='layer4'] .ev-health-badge")
    assert later.text == "⚠ NaN 100 % since backbone.layer3"
    clean = dash_duo.find_elements(f"#{ids.DATAPOINT_BODY} .ev-card[data-debugger='layer2'] .ev-health-badge")
    assert clean == []

    dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"row 1 of {len(POISONED)}", timeout=15)
    seen = {first}
    for k in range(2, len(POISONED) + 1):  # → walks the filtered rows only
        dash_duo.find_element("body").send_keys(Keys.ARROW_RIGHT)
        dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"row {k} of {len(POISONED)}", timeout=15)
        idx = int(url_state(dash_duo)["idx"])
        wait_for_datapoint(dash_duo, idx)
        seen.add(idx)
    assert seen == set(POISONED)
    assert dash_duo.get_logs() == []
