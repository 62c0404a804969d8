"""Small steps the browser tests share: open the app, click a table row, read what the datapoint view shows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait

from eval_viewer.app import create_app, ids
from eval_viewer.app.views import SECTION_TITLES
from eval_viewer.backend import LogStore

__all__ = ["start", "click_table_row", "table_column", "filter_table", "sort_table", "wait_for_datapoint",
           "assert_sections_and_cards", "open_debug_items", "url_state"]

DRAWN = "img, .js-plotly-plot, svg, canvas"
"""What counts as a drawn figure inside a card (a PNG, a Plotly graph, an SVG or a canvas), as opposed to text."""


def start(  # noqa: ANN001
    dash_duo, log_dirs: Sequence[Path], *, cache_dir: Path, query: str = "", rescan_s: float = 10.0
) -> LogStore:
    """Serve the logs with the real app and open ``/`` + ``query``; returns the store the app reads."""
    store = LogStore([str(d) for d in log_dirs], cache_dir=cache_dir, rescan_s=rescan_s)
    app = create_app(store, rescan_s=rescan_s)
    dash_duo.start_server(app)
    if query:
        dash_duo.driver.get(dash_duo.server_url + "/" + query)
    dash_duo.wait_for_element(f"#{ids.RUN}")
    return store


def url_state(dash_duo) -> dict[str, str]:  # noqa: ANN001
    query = parse_qs(urlparse(dash_duo.driver.current_url).query)
    return {k: v[-1] for k, v in query.items()}


_ROW_IDX = """
const cell = document.querySelector(arguments[0]);
const text = cell ? cell.textContent.trim() : "";
return /^[0-9]+$/.test(text) ? text : null;
"""


def click_table_row(dash_duo, row_index: int) -> str:  # noqa: ANN001
    """Click a cell of the table's ``row_index``-th displayed row; returns the idx shown in that row.

    The table loads its rows block by block from the server, so a row first shows as loading, with no idx: this waits
    until the row's idx cell holds a number before it reads it and clicks."""
    row = f".ag-row[row-index='{row_index}']"
    idx = WebDriverWait(dash_duo.driver, 15, poll_frequency=0.1).until(
        lambda d: d.execute_script(_ROW_IDX, f"#{ids.TABLE} .ag-pinned-left-cols-container {row} [col-id='idx']"),
        f"row {row_index} of the table never showed a datapoint",
    )
    _click(dash_duo, f"#{ids.TABLE} .ag-center-cols-container {row} .ag-cell")
    return idx


def _click(dash_duo, selector: str, tries: int = 5) -> None:  # noqa: ANN001
    """Click the element at ``selector``. The table draws its rows and headers again when a health summary finishes
    (its columns change), so an element found just before that is gone when clicked: then it is found again, as a
    user would click again."""
    for attempt in range(tries):
        try:
            dash_duo.find_element(selector).click()
            return
        except StaleElementReferenceException:
            if attempt == tries - 1:
                raise


_COLUMN = """
const cells = document.querySelectorAll(arguments[0] + ' .ag-header-cell:not(.ag-floating-filter)[col-id]');
const cell = Array.from(cells).find(c => c.textContent.trim().startsWith(arguments[1]));
return cell ? cell.getAttribute('col-id') : null;
"""


def table_column(dash_duo, header: str) -> str:  # noqa: ANN001
    """The column id of the table column whose header starts with ``header`` (the grid's own naming, not ours)."""
    return WebDriverWait(dash_duo.driver, 15, poll_frequency=0.1).until(
        lambda d: d.execute_script(_COLUMN, f"#{ids.TABLE}", header), f"no table column headed {header!r}"
    )


def filter_table(dash_duo, header: str, text: str) -> None:  # noqa: ANN001
    """Type ``text`` into the floating filter under the column ``header``, as a user does."""
    col = table_column(dash_duo, header)
    dash_duo.find_element(f"#{ids.TABLE} .ag-floating-filter[col-id='{col}'] input").send_keys(text)


def sort_table(dash_duo, header: str, clicks: int = 1) -> None:  # noqa: ANN001
    """Click the header of the column ``header``: ascending after one click, descending after two."""
    cell = f"#{ids.TABLE} .ag-header-cell:not(.ag-floating-filter)[col-id='{table_column(dash_duo, header)}']"
    for sort in ("ascending", "descending")[:clicks]:
        _click(dash_duo, f"{cell} .ag-header-cell-label")
        dash_duo.wait_for_element(f"{cell}[aria-sort='{sort}']", timeout=5)


_LOADING = "return document.querySelectorAll(\"[data-dash-is-loading='true']\").length"
_CARDS = """
return Array.from(document.querySelectorAll(arguments[0])).map(card => ({
  title: card.querySelector('.ev-card-title').textContent,
  drawn: card.querySelectorAll(arguments[1]).length,
  errors: Array.from(card.querySelectorAll('.ev-error')).map(e => e.textContent),
}));
"""


def wait_for_datapoint(dash_duo, idx: int | str) -> None:  # noqa: ANN001
    """Wait until the datapoint view shows ``idx`` and its body has been drawn.

    Absence is checked with one script call, not ``find_elements``: an empty ``find_elements`` waits out the
    driver's implicit wait every time."""
    dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"#{idx}", timeout=15)
    dash_duo.wait_for_element(f"#{ids.DATAPOINT_BODY} .ev-section", timeout=15)
    WebDriverWait(dash_duo.driver, 15, poll_frequency=0.1).until(
        lambda d: d.execute_script(_LOADING) == 0, "the datapoint view is still loading"
    )


_FOLDED = f"#{ids.DATAPOINT_BODY} .ev-item-box:has(> .ev-fold:not(.ev-open)) > .ev-fold-head"
_UNDRAWN = f"#{ids.DATAPOINT_BODY} .ev-fold.ev-open:not(:has(.ev-item-body))"
_COUNT = "return document.querySelectorAll(arguments[0]).length"


def open_debug_items(dash_duo) -> None:  # noqa: ANN001
    """Open every folded debug item as a user does (a click on its head, one after the other), and wait until each
    one is drawn. The app draws a debug item only while it is open (and remembers which are, in local storage)."""
    driver = dash_duo.driver
    while (folded := driver.execute_script(_COUNT, _FOLDED)) > 0:
        driver.execute_script("document.querySelector(arguments[0]).click()", _FOLDED)
        WebDriverWait(driver, 15, poll_frequency=0.05).until(
            lambda d: d.execute_script(_COUNT, _FOLDED) < folded, "a click on a folded item's head did not open it")
    WebDriverWait(driver, 15, poll_frequency=0.1).until(
        lambda d: d.execute_script(_COUNT, _UNDRAWN) == 0 and d.execute_script(_LOADING) == 0,
        "the opened debug items were not drawn")


def assert_sections_and_cards(dash_duo, debuggers: Sequence[str]) -> None:  # noqa: ANN001
    """All four section headings, and one card per debugger, titled with its name, holding a drawn figure (the
    debug items are opened first, as a user does)."""
    open_debug_items(dash_duo)
    titles = [t.strip() for t in dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);",
        f"#{ids.DATAPOINT_BODY} .ev-section-title")]  # read in one step: a title read one by one can go stale
    assert [t.lower() for t in titles] == [t.lower() for t in SECTION_TITLES]
    cards = dash_duo.driver.execute_script(_CARDS, f"#{ids.DATAPOINT_BODY} .ev-card", DRAWN)
    assert [card["title"] for card in cards] == list(debuggers)
    for card in cards:
        assert card["drawn"] > 0, f"the card of {card['title']!r} has no drawn figure"
        assert not card["errors"], f"the card of {card['title']!r} shows an error: {card['errors']}"
