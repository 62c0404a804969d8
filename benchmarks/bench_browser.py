"""Browser benchmark: how long a user waits for a datapoint view, in headless Chromium, beside the server's time.

Run from the repository root (Debian's ``chromium`` and ``chromedriver``, as the browser tests use)::

    python benchmarks/bench_browser.py                          # data/example + a 0.2 GB log, about three minutes
    python benchmarks/bench_browser.py --log-dir PATH --views 10 --large-gb 0
    python benchmarks/bench_browser.py --open-items all         # as a user who opened every debug item

Two ways to a datapoint are timed, each over the ``--views`` worst datapoints of the last validated epoch of the
first trainer run:

* **URL**: ``driver.get(?run=&split=&epoch=&metric=&idx=)``, a fresh page load, timed from the navigation's start
  (``performance.now()`` counts from it) to the view fully drawn;
* **arrow**: one press of → (a ``keydown`` on the page, what the keyboard does) in the datapoint view, timed from the
  press to the next datapoint's view fully drawn. The app draws neighbours ahead (prefetch on, as served), and a
  user reads each view for a moment before pressing again: ``--pause`` seconds (default 1).

"Fully drawn" is polled in the page every 5 ms: the position bar names the datapoint, its body is that datapoint's
(``data-idx`` of ``.ev-datapoint-content``, or, on an older app without it, the scores line changed), nothing is
loading (``data-dash-is-loading``), every Plotly graph in the body has drawn its SVG and every ``<img>`` is decoded.
Cards collapsed by the app count as drawn: what is folded is not waited for. The app draws a debug item only while
the user has it open (kept in the browser's local storage): ``--open-items none`` (default) is a first visit, every
item folded; ``all`` opens every debug item of the pass first (the same local storage entry a user's clicks write),
so each view draws all of them. The server time is the sum of the ``/_dash-update-component`` requests Flask
answered during that view (timed by hooks added here, not by the app), with their count and response bytes, printed
beside the browser's time for the same views.

The large log (``--large-gb`` of pages over ``--large-datapoints``, 0 to skip) is ``bench_backend.py``'s ``build``:
plain ``joblib.dump`` pages of a recorder record, a feature map sized to reach the size and a GradCAM map per
datapoint, written to a temporary folder and deleted afterwards.

The app is served by Werkzeug in a thread of this process (threaded, like the CLI's dev server), on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import g, request
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from werkzeug.serving import make_server

from eval_viewer.app import create_app, ids
from eval_viewer.app.state import ViewState, resolve, to_query
from eval_viewer.backend import LogStore
from eval_viewer.display.datapoint import item_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backend import build  # noqa: E402  (a sibling script, not a package)

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--window-size=1400,1000")
P50_TARGET_MS = 500
P95_TARGET_MS = 1000

_DRAWN = """
const idx = String(arguments[0]), before = arguments[1];
const pos = document.getElementById(arguments[2]), body = document.getElementById(arguments[3]);
if (!pos || !body || !pos.textContent.includes('#' + idx)) return false;
const content = body.querySelector('.ev-datapoint-content');
if (!content || !body.querySelector('.ev-section')) return false;
const tagged = content.getAttribute('data-idx');
if (tagged !== null ? tagged !== idx : (before !== null && body.querySelector('.ev-scores').textContent === before))
  return false;
if (document.querySelector("[data-dash-is-loading='true']")) return false;
for (const graph of body.querySelectorAll('.dash-graph')) {
  if (!graph.querySelector('.main-svg')) return false;
}
for (const img of body.querySelectorAll('img')) {
  if (!img.complete || img.naturalWidth === 0) return false;
}
return true;
"""

_WAIT = """
const done = arguments[arguments.length - 1];
const drawn = new Function(arguments[0]);
const args = [arguments[1], arguments[2], arguments[3], arguments[4]];
const t0 = arguments[5] === 'press' ? performance.now() : 0;
if (arguments[5] === 'press') {
  document.body.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true}));
}
(function poll() {
  if (drawn.apply(null, args)) { done(performance.now() - t0); } else { setTimeout(poll, 5); }
})();
"""


class Served:
    """The app on a free port in a thread, with per-request timing hooks on its Flask server."""

    def __init__(self, log_dirs: list[str], cache_dir: str) -> None:
        self.store = LogStore(log_dirs, cache_dir=cache_dir, rescan_s=10)
        self.app = create_app(self.store, rescan_s=10)
        self.requests: list[tuple[float, float, int]] = []  # (start, ms, bytes)
        server = self.app.server

        @server.before_request
        def _start() -> None:
            g.bench_t0 = time.perf_counter()

        @server.after_request
        def _stop(response: Any) -> Any:
            if request.path.endswith("/_dash-update-component"):
                t0 = g.get("bench_t0", time.perf_counter())
                self.requests.append((t0, 1000 * (time.perf_counter() - t0), response.calculate_content_length() or 0))
            return response

        self.http = make_server("127.0.0.1", 0, server, threaded=True)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def between(self, t0: float, t1: float) -> tuple[float, int, int]:
        picked = [(ms, n) for start, ms, n in list(self.requests) if t0 <= start <= t1]
        return sum(ms for ms, _ in picked), len(picked), sum(n for _, n in picked)

    def close(self) -> None:
        self.http.shutdown()
        self.store.close()


def _driver() -> webdriver.Chrome:
    options = Options()
    for flag in FLAGS:
        options.add_argument(flag)
    if os.path.exists("/usr/bin/chromium"):
        options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options)
    driver.set_script_timeout(60)
    return driver


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _wait(driver: webdriver.Chrome, idx: int, before: str | None, how: str) -> float:
    return float(driver.execute_async_script(_WAIT, _DRAWN, idx, before, ids.POSITION, ids.DATAPOINT_BODY, how))


def _scores_text(driver: webdriver.Chrome) -> str | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const s = document.querySelector('#' + arguments[0] + ' .ev-scores'); return s ? s.textContent : null;",
        ids.DATAPOINT_BODY)


def _open_everything(driver: webdriver.Chrome, store: LogStore, state: ViewState) -> int:
    """Write every debug item key of ``state``'s first datapoint into the app's local storage entry of open items
    (what a user's clicks on the items' heads write); returns how many."""
    record = store.datapoint(state.pass_key, int(store.scores(state.pass_key).ranking(state.metric)[0]))
    keys = [item_key("debug", name, item.key) for name, items in record.debug.items() for item in items]
    driver.execute_script("localStorage.setItem(arguments[0], arguments[1])", ids.OPEN_ITEMS, json.dumps(keys))
    return len(keys)


def run(log_dir: str, views: int, pause: float, open_items: str = "none") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ev-bench-browser-") as cache:
        served = Served([log_dir], cache)
        driver = _driver()
        try:
            trainer = next((r.name for r in served.store.runs() if r.kind == "trainer"), None)
            state = resolve(served.store, ViewState(run=trainer)).state
            scores = served.store.scores(state.pass_key)
            order = [int(i) for i in scores.ranking(state.metric)][: views + 1]
            served.store.wait_background(60)
            driver.get(served.url + to_query(state))  # warm-up: plotly.js and the assets in the browser's cache
            opened = _open_everything(driver, served.store, state) if open_items == "all" else 0
            driver.get(served.url + to_query(replace(state, idx=order[-1])))
            _wait(driver, order[-1], None, "load")
            results: dict[str, list[tuple[float, float, int, int]]] = {"URL": [], "arrow": []}
            for idx in order[:views]:
                t0 = time.perf_counter()
                driver.get(served.url + to_query(replace(state, idx=idx)))
                ms = _wait(driver, idx, None, "load")
                results["URL"].append((ms, *served.between(t0, time.perf_counter())))
            driver.get(served.url + to_query(replace(state, idx=order[0])))
            _wait(driver, order[0], None, "load")
            for idx in order[1: views + 1]:
                time.sleep(pause)
                before = _scores_text(driver)
                t0 = time.perf_counter()
                ms = _wait(driver, idx, before, "press")
                results["arrow"].append((ms, *served.between(t0, time.perf_counter())))
            size = driver.execute_script(
                "const b = document.getElementById(arguments[0]); return [b.scrollHeight, "
                "b.querySelectorAll('.dash-graph').length, b.querySelectorAll('img').length];", ids.DATAPOINT_BODY)
        finally:
            driver.quit()
            served.close()
    return {"state": state, "results": results, "page": size, "opened": opened}


def report(name: str, out: dict[str, Any], views: int) -> None:
    state = out["state"]
    height, graphs, images = out["page"]
    print(f"\n{name}: pass {state.run} {state.pass_key.label}, metric {state.metric}; {views} views each way; "
          f"{out['opened']} debug items open; last view: {height} px tall, {graphs} Plotly graphs, {images} <img>")
    print(f"{'how':6} {'p50':>8} {'p95':>8} {'max':>8}   server p50  requests  response p50")
    for how, rows in out["results"].items():
        browser = [r[0] for r in rows]
        server = [r[1] for r in rows]
        print(f"{how:6} {_pct(browser, 0.5):6.0f}ms {_pct(browser, 0.95):6.0f}ms {max(browser):6.0f}ms "
              f"  {statistics.median(server):8.1f}ms  {statistics.median(r[2] for r in rows):8.0f}  "
              f"{statistics.median(r[3] for r in rows) / 1024:8.0f} KiB")
    for how, rows in out["results"].items():
        browser = [r[0] for r in rows]
        met = _pct(browser, 0.5) <= P50_TARGET_MS and _pct(browser, 0.95) <= P95_TARGET_MS
        print(f"target {how}: p50 <= {P50_TARGET_MS} ms and p95 <= {P95_TARGET_MS} ms: {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--log-dir", default=str(REPO / "data" / "example"))
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds a user looks at a view before pressing →")
    parser.add_argument("--open-items", choices=("none", "all"), default="none",
                        help="debug items open: none (a first visit) or all of them")
    parser.add_argument("--large-gb", type=float, default=0.2, help="bytes of pages of the large log (0: none)")
    parser.add_argument("--large-datapoints", type=int, default=20_000)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    report(f"log {args.log_dir}", run(args.log_dir, args.views, args.pause, args.open_items), args.views)
    if args.large_gb > 0:
        work = Path(tempfile.mkdtemp(prefix="ev-bench-browser-large-"))
        try:
            started = time.perf_counter()
            info = build(work / "large", args.large_gb, args.large_datapoints, 1, 100)
            print(f"\nlarge log: {info['bytes'] / 1e9:.2f} GB of pages, {args.large_datapoints:,} datapoints, "
                  f"{info['pages']} pages, written in {time.perf_counter() - started:.0f} s")
            report("large log", run(str(work / "large"), args.views, args.pause, args.open_items), args.views)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
