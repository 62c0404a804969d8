"""Comparing two passes in headless Chromium: two epochs side by side, the full-precision run against its int8 copy.

Oracles are computed here from the files themselves (the scores JSON, the pages read with plain joblib and scipy),
never from the app's code, so a wrong delta order, a wrong worst head or a wrong datapoint fails.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import joblib
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from app_steps import url_state, wait_for_datapoint
from eval_viewer.app import ids

pytestmark = pytest.mark.browser

_LOADING = "return document.querySelectorAll(\"[data-dash-is-loading='true']\").length"
_CELL = """
const cell = document.querySelector(arguments[0]);
return cell ? cell.textContent.trim() : null;
"""


def _miou(example: Path, *parts: str) -> list[float]:
    values = json.loads(example.joinpath(*parts).read_text())["per_datapoint"]["miou"]
    return [math.nan if v is None else float(v) for v in values]


def _worst_change(a: list[float], b: list[float]) -> int:
    """Independent oracle: became NaN first, then the largest drop of miou (higher is better); ties by index."""
    def key(i: int) -> tuple[int, float, int]:
        if math.isnan(b[i]) and not math.isnan(a[i]):
            return (0, 0.0, i)
        if math.isnan(a[i]) or math.isnan(b[i]):
            return (2, 0.0, i)
        return (1, b[i] - a[i], i)

    return min(range(len(a)), key=key)


def _grid_row(dash_duo, grid: str, row: int, col: str) -> str:  # noqa: ANN001
    return WebDriverWait(dash_duo.driver, 30, poll_frequency=0.1).until(
        lambda d: d.execute_script(_CELL, f"#{grid} .ag-row[row-index='{row}'] [col-id='{col}']") or None,
        f"row {row} of {grid} never showed",
    )


def _click_row(dash_duo, grid: str, row: int) -> None:  # noqa: ANN001
    dash_duo.find_element(f"#{grid} .ag-center-cols-container .ag-row[row-index='{row}'] .ag-cell").click()


def _wait_paired(dash_duo, idx: int | str) -> None:  # noqa: ANN001
    dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"#{idx}", timeout=20)
    dash_duo.wait_for_element(f"#{ids.PAIRED_BODY} .ev-paired-card", timeout=20)
    WebDriverWait(dash_duo.driver, 20, poll_frequency=0.1).until(lambda d: d.execute_script(_LOADING) == 0)


def test_two_epochs_side_by_side_with_difference_maps(dash_duo, serve, example_dir: Path) -> None:
    serve([example_dir], query="?run=trainer_run&split=val&epoch=4&metric=miou")
    dash_duo.select_dcc_dropdown(f"#{ids.VS_RUN}", value="trainer_run")  # its default pass: the latest epoch, 9
    dash_duo.wait_for_contains_text(f"#{ids.COMPARE_CAPTION}", "matched", timeout=20)
    assert url_state(dash_duo)["vs_run"] == "trainer_run"
    worst = _worst_change(_miou(example_dir, "trainer_run", "epoch_4", "validation_scores.json"),
                          _miou(example_dir, "trainer_run", "epoch_9", "validation_scores.json"))
    assert int(_grid_row(dash_duo, ids.DELTA_TABLE, 0, "idx")) == worst
    _click_row(dash_duo, ids.DELTA_TABLE, 0)
    _wait_paired(dash_duo, worst)
    state = url_state(dash_duo)
    assert (state["idx"], state["vs_split"], state["vs_epoch"]) == (str(worst), "val", "9")
    cards = dash_duo.find_elements(f"#{ids.PAIRED_BODY} .ev-paired-card")
    assert {c.get_attribute("data-debugger") for c in cards} >= {"attention", "gradcam", "encoder_features"}
    assert dash_duo.find_elements(f"#{ids.PAIRED_BODY} .ev-paired-card .ev-diff-image")
    assert len(dash_duo.find_elements(f"#{ids.PAIRED_BODY} .ev-twin-a")) == len(
        dash_duo.find_elements(f"#{ids.PAIRED_BODY} .ev-twin-b"))
    assert "Δ (b − a)" in dash_duo.find_element(f"#{ids.PAIRED_BODY} .ev-delta-table").text
    assert dash_duo.get_logs() == []


def _attention_oracle(example: Path) -> tuple[int, int]:
    """The head with the highest mean JSD between the two runs, and the datapoint where it is highest (scipy)."""
    pages = [joblib.load(example / run / "debugger" / "page_0.pkl") for run in ("evaluator_run", "quantized_run")]
    per = np.array([[(jensenshannon(pages[0][i]["attention"]["attention"]["weights"][h].astype(np.float64),
                                    pages[1][i]["attention"]["attention"]["weights"][h].astype(np.float64),
                                    base=2, axis=-1) ** 2).mean()
                     for h in range(2)] for i in sorted(pages[0])])
    head = int(np.argmax(per.mean(0)))
    return head, int(np.argmax(per[:, head]))


def test_quantized_run_layer_table_fills_and_opens_the_worst_datapoint(dash_duo, serve, example_dir: Path) -> None:
    serve([example_dir], query="?run=evaluator_run&split=test&metric=miou")
    dash_duo.select_dcc_dropdown(f"#{ids.VS_RUN}", value="quantized_run")
    dash_duo.wait_for_element(f"#{ids.SUMMARY_PROGRESS} .ev-progress", timeout=20)  # the bar shows while it runs
    n = len(_miou(example_dir, "evaluator_run", "evaluation_scores.json"))
    dash_duo.wait_for_contains_text(f"#{ids.SUMMARY_PROGRESS}", f"{n} / {n} datapoints", timeout=120)
    head, worst = _attention_oracle(example_dir)
    assert _grid_row(dash_duo, ids.SUMMARY_TABLE, 0, "layer") == "attention/attention"
    assert _grid_row(dash_duo, ids.SUMMARY_TABLE, 0, "head") == str(head)
    _click_row(dash_duo, ids.SUMMARY_TABLE, 0)
    first = dash_duo.wait_for_element(f"#{ids.WORST_LIST} .ev-worst-button", timeout=20)
    assert first.text.startswith(f"#{worst} ")
    first.click()
    _wait_paired(dash_duo, worst)
    top = dash_duo.find_element(f"#{ids.PAIRED_BODY} .ev-paired-card")
    assert top.get_attribute("data-debugger") == "attention" and "ev-card-focus" in top.get_attribute("class")
    assert "JSD (bits)" in top.text
    assert url_state(dash_duo)["focus"] == '["debug","attention","attention"]'
    assert dash_duo.get_logs() == []


def test_a_shared_link_reopens_the_paired_view_and_arrows_walk_the_list(dash_duo, serve, example_dir: Path) -> None:
    a = _miou(example_dir, "trainer_run", "epoch_4", "validation_scores.json")
    b = _miou(example_dir, "trainer_run", "epoch_9", "validation_scores.json")

    def gain(i: int) -> float:
        return math.inf if math.isnan(a[i]) and not math.isnan(b[i]) else b[i] - a[i]

    improved = sorted((i for i in range(len(a)) if gain(i) > 0), key=lambda i: (-gain(i), i))  # biggest first
    assert len(improved) >= 2
    query = (f"?run=trainer_run&split=val&epoch=4&metric=miou&idx={improved[0]}"
             "&vs_run=trainer_run&vs_split=val&vs_epoch=9&filter=improved&change=0")
    serve([example_dir], query=query)
    _wait_paired(dash_duo, improved[0])
    assert dash_duo.find_element(f"#{ids.VS_RUN}").text.strip().startswith("trainer_run")
    dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"improved 1 of {len(improved)}", timeout=10)
    dash_duo.find_element(f"#{ids.NEXT}").click()
    _wait_paired(dash_duo, improved[1])
    assert url_state(dash_duo)["idx"] == str(improved[1]) and url_state(dash_duo)["filter"] == "improved"
    dash_duo.find_element(f"#{ids.PREV}").click()
    _wait_paired(dash_duo, improved[0])
    assert dash_duo.get_logs() == []


def _common_failures_oracle(example: Path, runs: tuple[str, ...], percentile: float) -> tuple[list[int], list[int]]:
    """Datapoints by how many runs they fail in (miou in a run's worst ``percentile`` %, or NaN), most first, ties by
    index; and the counts. From the scores files with numpy alone."""
    fails = []
    for run in runs:
        values = np.array(_miou(example, run, "evaluation_scores.json"))
        cut = np.percentile(values[np.isfinite(values)], percentile)
        fails.append(np.isnan(values) | (np.nan_to_num(values, nan=np.inf) <= cut))
    counts = np.sum(fails, axis=0).tolist()
    return sorted(range(len(counts)), key=lambda i: (-counts[i], i)), counts


_OPEN_MENU = "return document.querySelectorAll('.dash-dropdown-options').length"


def _pick(dash_duo, dropdown: str, label: str) -> None:  # noqa: ANN001
    """Choose ``label`` in a multi-select dropdown as a user does (open it, click the option), then close it."""
    if not dash_duo.driver.execute_script(_OPEN_MENU):
        dash_duo.find_element(dropdown).click()
    for attempt in range(5):  # the menu may be drawn again while it opens: a stale option is found again
        try:
            option = WebDriverWait(dash_duo.driver, 10, poll_frequency=0.1,
                                   ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option")
                                if o.text == label), None), f"no option {label!r}")
            option.click()
            break
        except StaleElementReferenceException:
            if attempt == 4:
                raise
    dash_duo.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    WebDriverWait(dash_duo.driver, 10, poll_frequency=0.1).until(lambda d: not d.execute_script(_OPEN_MENU))


_SHOWN = ("const e = document.querySelector(arguments[0]); "
          "return !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden'")
_TEXTS = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)"
_GRID_WIDTHS = "return [...document.querySelectorAll('.ag-root-wrapper')].map(e => e.getBoundingClientRect().width)"
_HEIGHT = "return document.querySelector(arguments[0]).getBoundingClientRect().height"


def test_common_failures_stay_folded_until_two_passes_are_picked(dash_duo, serve, example_dir: Path) -> None:
    """No passes picked: the panel is its picker and a one-line prompt, not an empty grid and an empty map."""
    serve([example_dir], query="?run=trainer_run&metric=miou")
    dash_duo.wait_for_contains_text(f"#{ids.FAIL_CAPTION}", "Pick two or more passes", timeout=20)
    dash_duo.wait_for_element(f"#{ids.HISTORY} .js-plotly-plot", timeout=20)  # the overview is drawn around it
    driver = dash_duo.driver
    box = f".ev-fail-box:has(#{ids.FAIL_PASSES})"
    for part in (ids.FAIL_RESULT, ids.FAIL_TABLE, ids.FAIL_MAP, ids.FAIL_OPTIONS):
        assert not driver.execute_script(_SHOWN, f"#{part}"), f"{part} shows with no passes picked"
    assert driver.execute_script(_HEIGHT, box) < 150  # title, picker, prompt: was ~470 px with the empty grid
    widths = driver.execute_script(_GRID_WIDTHS)  # folded grids (these, the comparison's) keep a width: AG Grid
    assert len(widths) >= 4 and min(widths) > 0, widths  # warns (#29) when it must fit columns into none
    _pick(dash_duo, f"#{ids.FAIL_PASSES}", "evaluator_run · test")
    dash_duo.wait_for_contains_text(f"#{ids.FAIL_CAPTION}", "Pick two or more passes", timeout=20)
    assert not driver.execute_script(_SHOWN, f"#{ids.FAIL_RESULT}")  # one pass: still nothing to list
    _pick(dash_duo, f"#{ids.FAIL_PASSES}", "quantized_run · test")
    dash_duo.wait_for_contains_text(f"#{ids.FAIL_CAPTION}", "fail in at least 2 of 2", timeout=20)
    dash_duo.wait_for_element(f"#{ids.FAIL_MAP} .js-plotly-plot .heatmaplayer", timeout=20)
    for part in (ids.FAIL_RESULT, ids.FAIL_TABLE, ids.FAIL_MAP, ids.FAIL_OPTIONS):
        assert driver.execute_script(_SHOWN, f"#{part}"), f"{part} is hidden with two passes picked"
    assert dash_duo.get_logs() == []


def test_common_failures_of_two_runs_list_map_and_open(dash_duo, serve, example_dir: Path) -> None:
    runs = ("evaluator_run", "quantized_run")
    serve([example_dir], query="?run=evaluator_run&split=test&metric=miou")
    dash_duo.wait_for_contains_text(f"#{ids.FAIL_CAPTION}", "Pick two or more passes", timeout=20)
    for run in runs:
        _pick(dash_duo, f"#{ids.FAIL_PASSES}", f"{run} · test")
    order, counts = _common_failures_oracle(example_dir, runs, 25)
    both = sum(1 for c in counts if c == 2)
    assert both >= 1
    dash_duo.wait_for_contains_text(f"#{ids.FAIL_CAPTION}", f"{both} datapoints fail in at least 2 of 2", timeout=20)
    assert int(_grid_row(dash_duo, ids.FAIL_TABLE, 0, "idx")) == order[0]
    assert _grid_row(dash_duo, ids.FAIL_TABLE, 0, "count") == "2"
    assert _grid_row(dash_duo, ids.FAIL_TABLE, both - 1, "idx") == str(order[both - 1])
    dash_duo.wait_for_element(f"#{ids.FAIL_MAP} .js-plotly-plot .heatmaplayer", timeout=20)  # datapoints x runs
    expected = {f"#{i}" for i in order[:both]}  # one map row per listed datapoint (read in one step: Plotly may
    WebDriverWait(dash_duo.driver, 10, poll_frequency=0.1).until(  # draw the map again as its row unfolds)
        lambda d: set(d.execute_script(_TEXTS, f"#{ids.FAIL_MAP} .ytick text")) == expected,
        f"the map's rows are not the listed datapoints {sorted(expected)}")
    _click_row(dash_duo, ids.FAIL_TABLE, 0)  # the idx cell: the first run it fails in
    wait_for_datapoint(dash_duo, order[0])
    state = url_state(dash_duo)
    assert (state["run"], state["split"], state["idx"], state["metric"]) == ("evaluator_run", "test",
                                                                            str(order[0]), "miou")
    dash_duo.find_element(f"#{ids.BACK}").click()
    dash_duo.wait_for_element(f"#{ids.FAIL_TABLE} .ag-row[row-index='0']", timeout=20)
    dash_duo.find_element(f"#{ids.FAIL_TABLE} .ag-row[row-index='0'] [col-id='p1']").click()  # the quantized run
    wait_for_datapoint(dash_duo, order[0])
    assert url_state(dash_duo)["run"] == "quantized_run"
    assert dash_duo.get_logs() == []


def test_a_training_snapshot_as_the_vs_pass_is_named_in_its_selector(dash_duo, serve, example_dir: Path) -> None:
    """The run's pass list leaves its snapshots out (the Training tab reaches them); a link comparing with one still
    shows it by name in "vs pass" (the selector was blank: its value had no option)."""
    steps = sorted(int(p.name.split("_")[-1]) for p in (example_dir / "trainer_run" / "train").iterdir()
                   if p.name.split("_")[-1].isdigit())
    assert steps, "the example has training snapshots"
    serve([example_dir], query=f"?run=trainer_run&split=val&epoch=9&metric=miou&vs_run=trainer_run&vs_split=train"
                               f"&vs_step={steps[-1]}")
    dash_duo.wait_for_contains_text(f"#{ids.VS_PASS}", f"train step {steps[-1]}", timeout=20)
    assert url_state(dash_duo)["vs_step"] == str(steps[-1])
    assert dash_duo.get_logs() == []
