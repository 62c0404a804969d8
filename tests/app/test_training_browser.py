"""The Training tab in headless Chromium: the switch appears for a run with training snapshots, the slider moves
through the steps, the same datapoint shows across steps, and steps a writer adds while the page is open appear
(the slider grows; a view left at the latest step follows). The Pass selector leaves snapshot steps to the tab, and a
run of snapshots saved without scores opens with a note, not an error. Snapshots are written by the real
SnapshotWriter."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import torch
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import WebDriverWait

from eval_viewer import log_format as lf
from eval_viewer.app import ids
from eval_viewer.debuggers.prompts import PromptData
from eval_viewer.debuggers.snapshots import SnapshotWriter

pytestmark = pytest.mark.browser

CARDS = f"#{ids.TRAIN_STEP_BODY} .ev-snapshot"
ACROSS = f"#{ids.TRAIN_ACROSS_BODY} .ev-snapshot"


def write_snapshots(writer: SnapshotWriter, steps: list[int]) -> None:
    for step in steps:
        gt = torch.zeros(2, 1, 32, 32)
        gt[:, 0, 8:24, 8:24] = 1
        writer(step, torch.rand(2, 3, 32, 32), gt=gt, pred=torch.randn(2, 1, 32, 32),
               prompts=[[PromptData.point([[16, 16]])], [PromptData.box_prompt([4, 4, 28, 28])]],
               indices=torch.tensor([step, step + 1]), force=True)
    writer.flush(30)


def trainer_log(root: Path, steps: list[int]) -> Path:
    run = root / "logs" / "run_a"
    for epoch in (0, 1):
        path = run / lf.epoch_dir_name(epoch) / lf.VALIDATION_SCORES
        path.parent.mkdir(parents=True)
        lf.write_scores(path, {}, {"iou": [0.2, 0.9, 0.5]})
    with SnapshotWriter(run, every_n_steps=10) as writer:
        write_snapshots(writer, steps)
    return run


def shown(dash_duo, selector: str) -> list[tuple[str, str]]:  # noqa: ANN001
    """``(step, idx)`` of the composite cards under ``selector`` whose picture has loaded."""
    return [tuple(card) for card in dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).filter(c => {"
        " const img = c.querySelector('img.ev-composite'); return img && img.complete && img.naturalWidth > 0; })"
        ".map(c => [c.dataset.step, c.dataset.idx]);", selector)]


def wait_shown(dash_duo, selector: str, expected: list[tuple[str, str]]) -> None:  # noqa: ANN001
    WebDriverWait(dash_duo.driver, 20, poll_frequency=0.2).until(
        lambda _: shown(dash_duo, selector) == expected,
        f"{selector} never showed {expected} (showed {shown(dash_duo, selector)})")


def fragment(dash_duo) -> dict[str, str]:  # noqa: ANN001
    return {k: v[-1] for k, v in parse_qs(urlparse(dash_duo.driver.current_url).fragment).items()}


def click_mark(dash_duo, step: int) -> None:  # noqa: ANN001
    """Click the slider where the mark of ``step`` is, as a user does (the slider snaps to its marks)."""
    marks = dash_duo.driver.find_elements("css selector", f"#{ids.TRAIN_STEP} .dash-slider-mark")
    mark = next((m for m in marks if m.text.strip() == str(step)), None)
    assert mark is not None, f"no slider mark {step} among {[m.text for m in marks]}"
    ActionChains(dash_duo.driver).move_to_element(mark).move_by_offset(0, -12).click().perform()


def test_training_tab_slider_and_across_steps(dash_duo, serve, tmp_path: Path) -> None:  # noqa: ANN001
    run = trainer_log(tmp_path, [0, 10, 20])
    serve([run.parent], rescan_s=1)
    dash_duo.wait_for_element(f"#{ids.VIEW_TABS_BOX}:not([hidden])", timeout=15)
    assert dash_duo.find_element(f"#{ids.TRAINING_VIEW}").get_attribute("hidden")  # the run opens on evaluation
    dash_duo.find_element(f"#{ids.VIEW_TABS} .ev-tab:nth-child(2)").click()
    wait_shown(dash_duo, CARDS, [("20", "0"), ("20", "1")])  # the latest step
    assert fragment(dash_duo) == {"view": "training"}
    assert dash_duo.find_element(f"#{ids.EVALUATION_VIEW}").get_attribute("hidden")
    assert not dash_duo.driver.find_elements("css selector", f"#{ids.TRAINING_VIEW} .js-plotly-plot")  # plain <img>
    wait_shown(dash_duo, ACROSS, [("0", "0"), ("10", "0"), ("20", "0")])
    assert "sample 20" in dash_duo.find_element(CARDS).text

    click_mark(dash_duo, 10)
    wait_shown(dash_duo, CARDS, [("10", "0"), ("10", "1")])
    assert fragment(dash_duo) == {"view": "training", "step": "10"}
    dash_duo.select_dcc_dropdown(f"#{ids.TRAIN_DATAPOINT}", index=1)
    wait_shown(dash_duo, ACROSS, [("0", "1"), ("10", "1"), ("20", "1")])
    assert fragment(dash_duo)["idx"] == "1"

    dash_duo.driver.refresh()  # the fragment is the state: a reload (or a shared link) shows the same
    wait_shown(dash_duo, CARDS, [("10", "0"), ("10", "1")])
    wait_shown(dash_duo, ACROSS, [("0", "1"), ("10", "1"), ("20", "1")])
    assert dash_duo.get_logs() == []


def test_steps_written_while_the_page_is_open_appear(dash_duo, serve, tmp_path: Path) -> None:  # noqa: ANN001
    run = tmp_path / "only_train"  # snapshots alone: the run opens on the Training tab
    writer = SnapshotWriter(run, every_n_steps=10)
    write_snapshots(writer, [0, 10])
    serve([run], rescan_s=1)
    wait_shown(dash_duo, CARDS, [("10", "0"), ("10", "1")])
    handle = f"#{ids.TRAIN_STEP} .dash-slider-thumb"
    click_mark(dash_duo, 0)  # a chosen step stays chosen while training goes on
    wait_shown(dash_duo, CARDS, [("0", "0"), ("0", "1")])

    adding = threading.Thread(target=write_snapshots, args=(writer, [20, 30, 40]))
    adding.start()
    WebDriverWait(dash_duo.driver, 30, poll_frequency=0.2).until(
        lambda _: dash_duo.find_element(handle).get_attribute("aria-valuemax") == "40", "the slider never grew")
    adding.join()
    dash_duo.wait_for_contains_text(f"#{ids.TRAIN_CAPTION}", "5 snapshots", timeout=15)
    assert shown(dash_duo, CARDS) == [("0", "0"), ("0", "1")]
    wait_shown(dash_duo, ACROSS, [("0", "0"), ("10", "0"), ("30", "0"), ("40", "0")])  # evenly spaced, live

    click_mark(dash_duo, 40)  # back at the latest step: the view follows training again
    wait_shown(dash_duo, CARDS, [("40", "0"), ("40", "1")])
    assert "step" not in fragment(dash_duo)
    write_snapshots(writer, [50])
    wait_shown(dash_duo, CARDS, [("50", "0"), ("50", "1")])
    writer.close()
    assert dash_duo.get_logs() == []


def pass_labels(dash_duo) -> list[str]:  # noqa: ANN001
    """The Pass selector's options, as its opened list shows them."""
    dash_duo.find_element(f"#{ids.PASS}").click()
    options = ".dash-dropdown-content[data-state=open] [role=option]"
    # read in one step inside the browser: the list may be drawn again while it opens, and an option read one by
    # one from Python can go stale in between (CI saw it once)
    texts = WebDriverWait(dash_duo.driver, 10, poll_frequency=0.2).until(
        lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]), o => o.innerText);", options) or None,
        "the Pass selector never opened")
    labels = [" ".join(t.split()) for t in texts]
    dash_duo.find_element(f"#{ids.PASS}").click()  # closed again
    WebDriverWait(dash_duo.driver, 10, poll_frequency=0.2).until(
        lambda _: not dash_duo.driver.find_elements("css selector", options), "the Pass selector never closed")
    return labels


def shown_errors(dash_duo) -> list[str]:  # noqa: ANN001
    """The error notes on screen, read in one step inside the browser (an element found from Python and then asked
    whether it is displayed can be drawn again in between: CI's stale-element failures)."""
    return dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll('.ev-error')).filter(e => e.offsetParent !== null)"
        ".map(e => e.innerText);")


def test_snapshots_stay_out_of_the_pass_selector_and_a_run_without_scores_opens(  # noqa: ANN001
        dash_duo, serve, tmp_path: Path) -> None:
    trainer_log(tmp_path, [0, 10, 20, 30])
    bare = tmp_path / "logs" / "bare"  # images and prompts only: no ground truth, no predictions, no scores file
    with SnapshotWriter(bare, every_n_steps=10) as writer:
        for step in (0, 10):
            writer(step, torch.rand(2, 3, 32, 32), prompts=[[PromptData.point([[16, 16]])]] * 2, force=True)
    assert not list(bare.rglob(lf.TRAINING_SCORES))
    serve([tmp_path / "logs"], query="?run=run_a")
    dash_duo.wait_for_contains_text(f"#{ids.PASS}", "epoch 1", timeout=15)
    # the 4 snapshot steps are reached through the Training tab, not listed beside the epochs
    assert pass_labels(dash_duo) == ["epoch 0 · scores only", "epoch 1 · scores only"]

    dash_duo.select_dcc_dropdown(f"#{ids.RUN}", value="bare")
    dash_duo.wait_for_contains_text(f"#{ids.PASS}", "train step 10", timeout=15)
    dash_duo.wait_for_contains_text(f"#{ids.NOTICE} .ev-warning", "No scores", timeout=15)
    assert "Training tab" in dash_duo.find_element(f"#{ids.NOTICE}").text
    wait_shown(dash_duo, CARDS, [("10", "0"), ("10", "1")])  # a run of snapshots alone opens on the Training tab
    assert dash_duo.find_element(f"#{ids.VIEW_TABS_BOX}").get_attribute("hidden")  # and has nothing to evaluate
    assert " ".join(dash_duo.find_element(f"#{ids.PASS}").text.split()) == "train step 10 · no scores"  # the only one
    assert shown_errors(dash_duo) == []
    dash_duo.driver.refresh()  # opened from its link: the same
    wait_shown(dash_duo, CARDS, [("10", "0"), ("10", "1")])
    dash_duo.wait_for_contains_text(f"#{ids.NOTICE} .ev-warning", "No scores", timeout=15)
    assert shown_errors(dash_duo) == []
    assert dash_duo.get_logs() == []


def test_the_example_run_has_a_training_tab(dash_duo, serve, example_dir: Path) -> None:  # noqa: ANN001
    serve([example_dir], query="?run=trainer_run")
    dash_duo.wait_for_element(f"#{ids.VIEW_TABS_BOX}:not([hidden])", timeout=15)
    dash_duo.wait_for_contains_text(f"#{ids.PASS}", "epoch 9", timeout=15)  # opens on its latest epoch
    dash_duo.find_element(f"#{ids.VIEW_TABS} .ev-tab:nth-child(2)").click()
    wait_shown(dash_duo, CARDS, [("320", str(i)) for i in range(4)])
    wait_shown(dash_duo, ACROSS, [("0", "0"), ("160", "0"), ("320", "0")])
    dash_duo.wait_for_contains_text(f"#{ids.TRAIN_CAPTION}", "3 snapshots, steps 0 to 320")
    assert dash_duo.get_logs() == []
