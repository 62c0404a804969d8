"""Views in a real browser: a static report page opened from a file, with no server and no network, draws every figure
and shows hostile text as text; the app's datapoint view draws debug items only while open, remembers which are, and
shows the same markup as the report."""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from app_steps import open_debug_items, wait_for_datapoint
from eval_viewer.app import ids
from eval_viewer.app.views import VIEW_IDS
from eval_viewer.backend import model
from eval_viewer.backend.model import Item
from eval_viewer.display import datapoint_view, item_key, page, to_html
from eval_viewer.display.datapoint import datapoint_view as neutral_view
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


# --- The app's datapoint view: debug items drawn only while open, the choice remembered; markup as the report's ---

_FOLDS = f"#{ids.DATAPOINT_BODY} .ev-fold"
_DEBUG_BODIES = f"#{ids.DATAPOINT_BODY} .ev-section-debug-outputs .ev-item-body"


def _count(dash_duo, selector: str) -> int:  # noqa: ANN001
    return int(dash_duo.driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector))


def _head(dash_duo, debugger: str, key: str):  # noqa: ANN001, ANN202
    return dash_duo.find_element(f".ev-card[data-debugger='{debugger}'] "
                                 f".ev-fold-head[id*='{json.dumps(key)[1:-1]}']")


def test_debug_items_open_on_a_click_and_stay_open(dash_duo, serve, example_dir: Path) -> None:  # noqa: ANN001
    """Debug items start folded (their heads only); a click draws one, it stays open on the next datapoint and after
    a reload (local storage), and a second click folds it again. Other items are never drawn meanwhile."""
    store = serve([example_dir])
    trainer = next(r for r in store.runs() if r.kind == "trainer")
    key = next(p.key for p in reversed(trainer.passes) if p.has_debug and p.split == "val")
    ranking = [int(i) for i in store.scores(key).ranking(store.scores(key).metrics[0])]
    record = store.datapoint(key, ranking[0])
    n_items = sum(len(items) for items in record.debug.values())
    name, items = next((n, i) for n, i in record.debug.items() if any(it.kind == Kind.FEATURE_MAP for it in i))
    item = next(it for it in items if it.kind == Kind.FEATURE_MAP)
    wanted = item_key("debug", name, item.key)
    url = f"{dash_duo.server_url}/?run={trainer.name}&epoch={key.step}&metric={store.scores(key).metrics[0]}"

    dash_duo.driver.get(f"{url}&idx={ranking[0]}")
    wait_for_datapoint(dash_duo, ranking[0])
    assert _count(dash_duo, _FOLDS) == n_items and _count(dash_duo, _DEBUG_BODIES) == 0
    assert _count(dash_duo, f"#{ids.DATAPOINT_BODY} .ev-section-inputs img") >= 1  # inputs are always drawn

    _head(dash_duo, name, item.key).click()
    dash_duo.wait_for_element(f".ev-card[data-debugger='{name}'] .ev-fold.ev-open .ev-item-body img", timeout=10)
    assert _count(dash_duo, _DEBUG_BODIES) == 1
    assert json.loads(dash_duo.driver.execute_script(f"return localStorage.getItem('{ids.OPEN_ITEMS}')")) == [wanted]

    dash_duo.find_element("body").send_keys(Keys.ARROW_RIGHT)  # the next datapoint comes with the item drawn
    wait_for_datapoint(dash_duo, ranking[1])
    dash_duo.wait_for_element(f".ev-card[data-debugger='{name}'] .ev-fold.ev-open .ev-item-body img", timeout=10)
    assert _count(dash_duo, _DEBUG_BODIES) == 1

    dash_duo.driver.refresh()
    wait_for_datapoint(dash_duo, ranking[1])
    dash_duo.wait_for_element(f".ev-card[data-debugger='{name}'] .ev-fold.ev-open .ev-item-body img", timeout=10)
    assert _count(dash_duo, _DEBUG_BODIES) == 1

    _head(dash_duo, name, item.key).click()
    dash_duo._wait_for(lambda _: _count(dash_duo, _DEBUG_BODIES) == 0, timeout=10, msg="the item did not fold")
    assert json.loads(dash_duo.driver.execute_script(f"return localStorage.getItem('{ids.OPEN_ITEMS}')")) == []
    assert dash_duo.get_logs() == []


_CLASSES = """
return Array.from(document.querySelectorAll(arguments[0] + ' [class*="ev-"]')).map(e => e.getAttribute('class'));
"""


def test_the_app_view_shows_the_markup_of_the_report(dash_duo, serve, example_dir: Path) -> None:  # noqa: ANN001
    """Most of the app's view arrives as markup put in place in the browser (one component where nothing listens):
    with every item open, the page holds the elements the static-HTML adapter writes for the same view, in order,
    every picture decoded."""
    store = serve([example_dir])
    trainer = next(r for r in store.runs() if r.kind == "trainer")
    key = next(p.key for p in reversed(trainer.passes) if p.has_debug and p.split == "val")
    idx = int(store.scores(key).ranking(store.scores(key).metrics[0])[0])
    dash_duo.driver.get(f"{dash_duo.server_url}/?run={trainer.name}&epoch={key.step}&idx={idx}")
    wait_for_datapoint(dash_duo, idx)
    open_debug_items(dash_duo)

    record = store.datapoint(key, idx)
    opened = [item_key("debug", n, it.key) for n, items in record.debug.items() for it in items]
    tree = neutral_view(record, store.scores(key).metrics[0], store.scores(key).higher_is_better, ids=VIEW_IDS,
                        opened=opened)
    parser = _Classes()
    parser.feed(to_html(tree))
    shown = dash_duo.driver.execute_script(_CLASSES, f"#{ids.DATAPOINT_BODY} .ev-datapoint-content")
    def comparable(classes: list[str]) -> list[str]:  # Dash's graph adds its own class; health badges: the app's
        return [c.replace("dash-graph ", "") for c in classes if "ev-" in c and "ev-health" not in c]

    assert comparable(shown) == comparable(parser.classes[1:]) and len(shown) > 100
    assert dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' img')).every(i => i.complete && "
        "i.naturalWidth > 0)", f"#{ids.DATAPOINT_BODY}")
    assert dash_duo.get_logs() == []


class _Classes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.classes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class")
        if cls and "ev-" in cls:
            self.classes.append(cls)
