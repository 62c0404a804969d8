"""Health thresholds in headless Chromium: the Health panel's inputs change what is flagged, the URL holds the change
(a shared link reproduces it), and the summary, the failure table's health columns and the card badges follow it.
A value that is not a threshold is refused with a visible message and changes nothing.

The log is the planted run of :mod:`health_run`. Which cells a lower ``saturated`` threshold adds follows from its
definition, not from the app's code: the two extremes (max and min) of a layer's output always "sit at its extremes",
so ``saturated=0.01`` flags a layer whose output has fewer than 200 values. ``backbone.layer4`` (stride 2: DIM x 4 x 4
= 192 values) is the only one; the 8 x 8 layers have 768. Its POISONED datapoints are all NaN there (no finite
extremes), so the others are flagged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from app_steps import click_table_row, table_column, url_state, wait_for_datapoint
from eval_viewer.app import ids

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))
from health_run import DIM, JUMP, N, POISONED, write_health_run  # noqa: E402  (a backend test helper: the capture run)

pytestmark = pytest.mark.browser

SATURATED = f"#{ids.HEALTH_BODY} [id*='{ids.HEALTH_CELL_TYPE}'][id*='backbone.layer4'][id*='\"saturated\"']"
NAN = f"#{ids.HEALTH_BODY} [id*='{ids.HEALTH_CELL_TYPE}'][id*='backbone.layer3'][id*='\"nan\"']"
INPUT = f"input[id*='{ids.HEALTH_THRESHOLD_TYPE}'][id*='\"saturated\"']"
_COUNT = "return document.querySelectorAll(arguments[0]).length"


def _type(dash_duo, text: str) -> None:  # noqa: ANN001
    """Replace the saturated threshold's text as a user does, and press Enter (the input sends on Enter or blur)."""
    box = dash_duo.find_element(INPUT)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    box.send_keys(text + Keys.ENTER)


def test_a_threshold_changes_the_flags_everywhere_and_the_url_holds_it(dash_duo, serve, tmp_path: Path) -> None:
    assert DIM * 4 * 4 < 200 <= DIM * 8 * 8  # what the expectations below rest on (see the module docstring)
    flagged = N - len(POISONED)
    logs = tmp_path / "logs"
    write_health_run(logs / "planted", epochs=1)
    serve([logs], query="?run=planted&metric=loss")
    dash_duo.wait_for_element(NAN, timeout=30)
    box = dash_duo.find_element(INPUT)
    assert box.get_attribute("placeholder") == "0.5" and box.get_attribute("value") == ""  # the documented default
    assert dash_duo.driver.execute_script(_COUNT, SATURATED) == 0

    for bad, why in (("-1", "saturated must be a fraction from 0 to 1, not '-1'"),
                     ("lots", "saturated must be a fraction from 0 to 1, not 'lots'")):
        _type(dash_duo, bad)
        dash_duo.wait_for_contains_text(f"#{ids.HEALTH_THRESHOLD_MESSAGE}", why, timeout=10)
        assert "health_saturated" not in url_state(dash_duo)
        assert dash_duo.find_element(NAN).is_displayed()  # the summary is still there, unchanged

    _type(dash_duo, "0.01")
    cell = dash_duo.wait_for_element(SATURATED, timeout=30)
    assert cell.text.startswith(f"{flagged} / {N}")
    assert url_state(dash_duo)["health_saturated"] == "0.01"
    assert dash_duo.find_element(f"#{ids.HEALTH_THRESHOLD_MESSAGE}").text == ""
    assert dash_duo.find_element(NAN).text.startswith(f"{len(POISONED)} / {N}")  # the other flags are unchanged

    table_column(dash_duo, "saturated")  # the table's health columns under these thresholds are in place
    cell.click()  # the failure table's health filter uses the same thresholds
    dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{flagged} of {N} datapoints match", timeout=15)
    first = int(click_table_row(dash_duo, 0))
    assert first not in POISONED
    wait_for_datapoint(dash_duo, first)
    assert url_state(dash_duo)["health_saturated"] == "0.01"  # opening a datapoint keeps the thresholds
    badge = dash_duo.find_element(f"#{ids.DATAPOINT_BODY} .ev-card[data-debugger='layer4'] "
                                  ".ev-health-badge.ev-health-saturated")
    assert badge.text.startswith("⚠ saturated")

    # A shared link reopens with the threshold in its input and the same flags.
    dash_duo.driver.get(dash_duo.server_url + "/?run=planted&metric=loss&health_saturated=0.01")
    dash_duo.wait_for_element(SATURATED, timeout=30)
    WebDriverWait(dash_duo.driver, 10, poll_frequency=0.1).until(
        lambda d: d.find_element("css selector", INPUT).get_attribute("value") == "0.01", "the input lost its value")

    dash_duo.find_element(f"#{ids.HEALTH_THRESHOLD_RESET}").click()  # back to the defaults: the URL drops it
    WebDriverWait(dash_duo.driver, 10, poll_frequency=0.1).until(
        lambda d: "health_saturated" not in url_state(dash_duo), "the defaults stayed in the URL")
    WebDriverWait(dash_duo.driver, 30, poll_frequency=0.1).until(
        lambda d: d.execute_script(_COUNT, SATURATED) == 0, "the saturated cell stayed with the default threshold")
    assert dash_duo.get_logs() == []


JUMP_CELL = f"#{ids.HEALTH_BODY} [id*='{ids.HEALTH_CELL_TYPE}'][id*='backbone.layer4'][id*='\"scale_jump\"']"


def test_scale_jumps_filter_the_table_and_follow_their_threshold(dash_duo, serve, tmp_path: Path) -> None:
    """Epoch 1 of the planted run multiplies layer4's weights by JUMP: a click on its scale-jump count lists the
    datapoints whose layer4 RMS jumped against epoch 0 (all but the POISONED, NaN in both); a threshold above JUMP
    takes the jump away."""
    jumped = N - len(POISONED)
    logs = tmp_path / "logs"
    write_health_run(logs / "planted", epochs=2)
    serve([logs], query="?run=planted&split=val&epoch=1&metric=loss")
    cell = dash_duo.wait_for_element(JUMP_CELL, timeout=30)
    assert cell.text.startswith(f"{jumped} / {jumped}") and f"×{JUMP:g}" in cell.text
    table_column(dash_duo, "scale jump")  # the failure table has the column once epoch 0's summary is done too
    cell.click()
    dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{jumped} of {N} datapoints match", timeout=15)
    assert int(click_table_row(dash_duo, 0)) not in POISONED

    dash_duo.find_element(f"#{ids.BACK}").click()
    box = dash_duo.find_element(f"input[id*='{ids.HEALTH_THRESHOLD_TYPE}'][id*='\"scale_jump\"']")
    box.send_keys(f"{JUMP * 10:g}" + Keys.ENTER)
    WebDriverWait(dash_duo.driver, 30, poll_frequency=0.1).until(
        lambda d: d.execute_script(_COUNT, JUMP_CELL) == 0, "the scale jump stayed above its threshold")
    assert url_state(dash_duo)["health_scale_jump"] == f"{JUMP * 10:g}"
    assert dash_duo.get_logs() == []
