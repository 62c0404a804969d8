"""The export's report in headless Chromium, opened from ``file://`` with no server: every datapoint of the K there,
every picture decoded, every Plotly figure drawn, no console error and no request that is not a file or data URL.

Requests are read from the Resource Timing API, which lists every fetch a page makes (failed ones too) except those
of ``file:`` URLs; the first test shows the check catches a page that reaches for the network.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from app_logs import reference_scores
from eval_viewer.backend import LogStore
from eval_viewer.cli import main
from eval_viewer.display.html import PLOTLYJS_FILE

pytestmark = pytest.mark.browser

STATE = """
const plots = [...document.querySelectorAll('.js-plotly-plot')];
return {
  ready: document.readyState === 'complete' && [...document.images].every(i => i.complete)
         && plots.every(p => p.querySelector('svg.main-svg')),
  sections: [...document.querySelectorAll('section.ev-report-entry')].map(s => Number(s.dataset.idx)),
  images: [...document.images].map(i => i.naturalWidth),
  plots: plots.length,
  drawn: plots.filter(p => p.querySelector('svg.main-svg')).length,
  figures: document.documentElement.innerHTML.split('Plotly.newPlot(').length - 1,
  plotly: typeof window.Plotly,
  requests: performance.getEntriesByType('resource').map(e => e.name),
};
"""


def open_report(dash_duo, path: Path) -> dict[str, Any]:  # noqa: ANN001 (dash fixture)
    """Open ``path`` from file:// and wait (up to 60 s) until its pictures are decoded and its figures drawn."""
    driver = dash_duo.driver
    driver.get(path.as_uri())
    try:
        WebDriverWait(driver, 60, poll_frequency=0.2).until(lambda d: d.execute_script(STATE)["ready"])
    finally:
        state = driver.execute_script(STATE)
    return state


def elsewhere(state: dict[str, Any]) -> list[str]:
    """Requests the page made to anything but a file or a data URL."""
    return [url for url in state["requests"] if not url.startswith(("file:", "data:"))]


def export(tmp_path: Path, log_dir: Path, *args: str) -> Path:
    out = tmp_path / "report"
    code = main(["export", "--log-dir", str(log_dir), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet", *args])
    assert code == 0
    return out / "report.html"


def worst(store: LogStore, key: tuple[str, str, int | None], metric: str, k: int) -> list[int]:
    return [int(i) for i in store.scores(key).ranking(metric)[:k]]


def assert_complete(state: dict[str, Any], expected: list[int]) -> None:
    assert state["sections"] == expected
    assert state["images"] and all(width > 0 for width in state["images"])
    assert state["figures"] > 0 and state["plots"] == state["drawn"] == state["figures"]
    assert state["plotly"] == "object"
    assert elsewhere(state) == []


def test_example_report_inline_opens_offline(dash_duo, example_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    # the check itself: a page that loads a picture over http is caught
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png"><p>control</p>')
    assert elsewhere(open_report(dash_duo, control)) == ["http://127.0.0.1:9/x.png"]
    dash_duo.reset_log_timestamp()  # its failed load is an expected console error

    path = export(tmp_path, example_dir, "--run", "trainer_run", "--metric", "miou", "--worst", "5")
    state = open_report(dash_duo, path)
    with LogStore(example_dir, cache_dir=tmp_path / "cache", rescan_s=0) as store:
        expected = worst(store, ("trainer_run", "val", 9), "miou", 5)
    assert_complete(state, expected)
    assert not (path.parent / PLOTLYJS_FILE).exists()
    # the contents link to each datapoint's section
    dash_duo.driver.find_element("css selector", f'#ev-report-toc a[href="#dp-{expected[-1]}"]').click()
    WebDriverWait(dash_duo.driver, 10).until(lambda d: d.execute_script("return window.scrollY") > 0)
    assert dash_duo.driver.execute_script("return location.hash") == f"#dp-{expected[-1]}"
    assert dash_duo.get_logs() == []


def test_reference_log_report_directory_mode(dash_duo, reference_log: Path, tmp_path: Path) -> None:  # noqa: ANN001
    path = export(tmp_path, reference_log, "--run", "ref_run", "--epoch", "0", "--metric", "iou", "--worst", "4",
                  "--plotlyjs", "directory")
    assert (path.parent / PLOTLYJS_FILE).is_file()
    state = open_report(dash_duo, path)
    iou = reference_scores(reference_log, 0)["iou"]
    finite = sorted((v, i) for i, v in enumerate(iou) if v is not None)
    expected = [i for i, v in enumerate(iou) if v is None] + [i for _, i in finite][:4 - sum(v is None for v in iou)]
    assert not any(v is not None and math.isnan(v) for v in iou)
    assert_complete(state, expected)
    assert dash_duo.get_logs() == []


def test_paired_report_opens_offline(dash_duo, example_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    path = export(tmp_path, example_dir, "--run", "evaluator_run", "--metric", "miou", "--worst", "3",
                  "--vs-run", "quantized_run", "--plotlyjs", "directory")
    state = open_report(dash_duo, path)
    with LogStore(example_dir, cache_dir=tmp_path / "cache", rescan_s=0) as store:
        expected = worst(store, ("evaluator_run", "test", None), "miou", 3)
    assert_complete(state, expected)
    twins = dash_duo.driver.execute_script("return document.querySelectorAll('.ev-paired .ev-twin-b img').length")
    assert twins > 0
    assert dash_duo.get_logs() == []
