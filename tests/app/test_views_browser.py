"""A static report page in a real browser: opened from a file, with no server and no network, it draws every figure
and shows hostile text as text."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium.webdriver.support.ui import WebDriverWait

from eval_viewer.backend import model
from eval_viewer.backend.model import Item
from eval_viewer.display import datapoint_view, page
from eval_viewer.display.view import Figure, walk
from eval_viewer.log_format import Kind

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


def _record() -> model.DatapointRecord:
    rng = np.random.default_rng(0)
    names = {f.name for f in dataclasses.fields(model.DatapointRecord)}
    where: dict[str, Any] = {"pass_key": model.PassKey("r", "val", 1)} if "pass_key" in names else {"run": "r",
                                                                                                    "epoch": 1}
    image = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    return model.DatapointRecord(
        idx=0, **where, scores={"iou": 0.5}, inputs=(Item("image", Kind.IMAGE, image),),
        labels=(Item("mask", Kind.MASK, rng.integers(0, 3, (48, 64))),),
        predictions=(Item("mask", Kind.MASK, rng.integers(0, 3, (48, 64))),),
        meta_info={"note": HOSTILE},
        debug={"attn": (Item("", Kind.ATTENTION, {"attention": rng.random((2, 12, 12)), "grid": (3, 4)}),),
               "log": (Item("text", Kind.TEXT, HOSTILE),)},
    )


def test_a_report_page_draws_offline_and_escapes_text(dash_duo, tmp_path: Path) -> None:  # noqa: ANN001
    view = datapoint_view(_record(), "iou")
    n_figures = sum(isinstance(node, Figure) for node in walk(view))
    report = tmp_path / "report.html"
    report.write_text(page([view], title="report"), encoding="utf-8")

    driver = dash_duo.driver
    driver.get(report.as_uri())
    WebDriverWait(driver, 20, poll_frequency=0.2).until(
        lambda d: d.execute_script("return document.querySelectorAll('.ev-figure .main-svg').length") > 0,
        "no figure was drawn",
    )
    drawn = driver.execute_script("return document.querySelectorAll('.js-plotly-plot').length")
    assert drawn == n_figures >= 1  # the clickable attention overlay; pictures without hover are plain <img>
    pictures = driver.execute_script(
        "return Array.from(document.querySelectorAll('img.ev-picture, img.ev-mosaic'))"
        ".map(i => i.complete && i.naturalWidth > 0)")
    assert len(pictures) > 5 and all(pictures)
    assert driver.title == "report"  # the hostile text ran nothing
    assert HOSTILE in driver.find_element("css selector", ".ev-card[data-debugger='log'] .ev-text").text
    assert driver.execute_script(
        "return getComputedStyle(document.querySelector('.ev-section')).borderRadius") == "8px"  # the app's CSS
    assert dash_duo.get_logs() == []
