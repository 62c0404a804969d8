"""Browser and log fixtures for the app tests.

The browser is Debian's Chromium driven by Debian's chromedriver from ``/usr/bin`` (selenium 4.2 finds
``chromedriver`` on PATH and never downloads one), headless, with the flags that keep it quiet and fast on a small
machine. Logs come from two places: the committed example run (``data/example``, written by ``eval_viewer.demo``; read
only) and a log in the plain reference layout hand-made here in ``tmp_path`` with ``joblib.dump`` (no ``index.json``,
nothing from our writer), the layout other tools already produce.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from dash.testing.application_runners import BaseDashRunner
from selenium.webdriver.chrome.options import Options

from app_logs import write_reference_log
from app_steps import start
from eval_viewer.backend import LogStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = Path(os.environ.get("EVAL_VIEWER_EXAMPLE_DIR", REPO / "data" / "example"))
"""The committed example log; EVAL_VIEWER_EXAMPLE_DIR points the tests at another copy written by the demo."""
CHROMIUM = "/usr/bin/chromium"
HEADLESS_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1400,1000",
)

# dash.testing numbers its servers from one fixed port in every process, so two test runs on one machine (two
# developers' checkouts, a benchmark beside the suite) would fight over it: each process starts at its own base.
BaseDashRunner._next_port = int(os.environ.get("EVAL_VIEWER_TEST_PORT", 0)) or 20000 + (os.getpid() % 4000) * 10


def pytest_setup_options() -> Options:
    """dash.testing's hook: the ChromeOptions its ``dash_duo`` browser starts with."""
    options = Options()
    for flag in HEADLESS_FLAGS:
        options.add_argument(flag)
    if os.path.exists(CHROMIUM):
        options.binary_location = CHROMIUM
    return options


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a chromedriver on PATH the browser tests are skipped with the reason, not failed by a download.

    Under CI (``CI`` set) nothing is skipped: .ci/run installs the browser, so a missing one is a failure to see."""
    if shutil.which("chromedriver") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="no chromedriver on PATH (apt-get install chromium chromium-driver)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def example_dir() -> Path:
    """The committed example log (read only)."""
    if not (EXAMPLE.is_dir() and any(EXAMPLE.iterdir())):
        pytest.skip("data/example is missing: generate it with `python -m eval_viewer.demo --out data/example`")
    return EXAMPLE


@pytest.fixture
def reference_log(tmp_path: Path) -> Path:
    """A trainer run in the plain reference layout (see :func:`app_logs.write_reference_log`)."""
    return write_reference_log(tmp_path / "logs")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """Index cache of the store under test, so tests never write into the user's ~/.cache."""
    return tmp_path / "index-cache"


@pytest.fixture
def serve(dash_duo, cache_dir: Path) -> Iterator[Callable[..., LogStore]]:  # noqa: ANN001 (dash fixture)
    """``serve(log_dirs, query="")``: the real app on those logs in the test's browser; stores are closed after."""
    stores: list[LogStore] = []

    def _serve(log_dirs: Sequence[Path], query: str = "", rescan_s: float = 10.0) -> LogStore:
        store = start(dash_duo, log_dirs, cache_dir=cache_dir, query=query, rescan_s=rescan_s)
        stores.append(store)
        return store

    yield _serve
    for store in stores:
        store.close()
